"""Bench helpers for the audit log: a log built in bulk, and the hashlib baselines
the verifier is measured against (``bench_audit`` sections 2 and 3).

The baselines live here, importable by path, so that worker processes started by
``audit._parallel`` can run ``_hash_span`` whatever their start method.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from audit import NoteSigner, _runs, store
from audit._parallel import map_in_order, plan
from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.entry import ZERO_CHAIN, chain_hash
from audit.merkle import CompactRange, leaf_hash

__all__ = [
    "TS",
    "best",
    "best_alternating",
    "bulk_build",
    "hashing_core",
    "hashlib_alone",
    "hashlib_over_processes",
]

TS = "2026-06-01T12:00:00.000Z"


def bulk_build(engine: sa.Engine, datas: Iterator[bytes], signer: NoteSigner | None) -> int:
    """Write a complete log row by row (leaves, chain, tree nodes, head, one checkpoint)."""
    store.create_schema(engine)
    cr, chain, seq = CompactRange(), ZERO_CHAIN, 0
    rows: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    with engine.begin() as conn:

        def flush() -> None:
            if rows:
                conn.execute(store.entries.insert(), rows)
            if nodes:
                conn.execute(store.nodes.insert(), nodes)
            rows.clear()
            nodes.clear()

        for data in datas:
            lh = leaf_hash(data)
            chain = chain_hash(chain, lh)
            for level, idx, h in cr.append(lh):
                nodes.append({"level": level, "idx": idx, "hash": h})
            rows.append(
                {
                    "seq": seq,
                    "ts": TS,
                    "event": "exchange",
                    "exchange_id": f"ex-{seq}",
                    "subject": None,
                    "data": data,
                    "leaf_hash": lh,
                    "chain_hash": chain,
                }
            )
            seq += 1
            if len(rows) >= 20_000:
                flush()
        flush()
        conn.execute(
            store.head.update()
            .where(store.head.c.id == 1)
            .values(size=seq, chain_hash=chain, frontier=cr.to_bytes(), ts=TS)
        )
        if signer is not None:
            note = sign_checkpoint(Checkpoint(signer.name, seq, cr.root()), signer)
            conn.execute(
                store.checkpoints.insert().values(size=seq, root=cr.root(), note=note, ts=TS)
            )
    return seq


def best(fn: Callable[[], Any], reps: int = 3) -> float:
    fastest = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - t)
    return fastest


def best_alternating(fns: list[Callable[[], Any]], reps: int) -> list[float]:
    """The best time of each, taking turns, so load that comes and goes meanwhile
    weighs on all of them alike."""
    fastest = [float("inf")] * len(fns)
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            fastest[i] = min(fastest[i], time.perf_counter() - t)
    return fastest


@contextmanager
def hashing_core(core: _runs.Core) -> Iterator[None]:
    """The verifier's bulk checks run on ``core`` meanwhile; forked workers too."""
    saved, _runs.core = _runs.core, core
    try:
        yield
    finally:
        _runs.core = saved


def _hash_span(span: tuple[str, int, int]) -> int:
    """hashlib alone over one worker's share of entries.jsonl: read, split, hash each."""
    path, lo, hi = span
    with open(path, "rb") as f:
        f.seek(lo)
        lines = f.read(hi - lo).split(b"\n")
    sha = hashlib.sha256
    for line in lines[:-1]:
        sha(line).digest()
    return len(lines) - 1


def hashlib_over_processes(path: Path, jobs: int) -> int:
    """The per-entry hashlib baseline spread like ``verify_export --jobs``: the same
    byte ranges, taken by the same processes the same way."""
    spans = [(str(path), lo, hi) for lo, hi in plan(path, jobs)]
    return sum(map_in_order(_hash_span, spans, jobs, 0))


def hashlib_alone(path: Path) -> tuple[float, float, float]:
    """Single-thread hashlib: per entry in memory, per entry reading the file, and one
    streaming hash of the whole file. (Its buffers are gone before verify runs, so
    forked workers do not copy them.)"""
    raw = path.read_bytes()
    lines = raw.split(b"\n")[:-1]
    sha = hashlib.sha256

    def per_entry() -> None:
        for line in lines:
            sha(line).digest()

    def per_entry_from_file() -> None:
        with open(path, "rb") as f:
            for line in f:
                sha(line[:-1]).digest()

    return (
        best(per_entry, reps=5),
        best(per_entry_from_file, reps=5),
        best(lambda: sha(raw).digest()),
    )
