"""Check an export's entries on several cores: chunks of entries.jsonl in worker processes.

``entries.jsonl`` is cut into byte ranges at line ends. Each worker reads its range
and the matching lines of ``hashes.txt`` itself (nothing big crosses a pipe) and
runs ``check_run`` over them, starting its chain checks from the *stored* link just
before the chunk. Where a chunk starts is the seq its first entry claims (one JSON
parse a chunk), only a hint: the verifier accepts chunk results strictly in order
and only if each starts at the seq and the chain hash the previous one ended with
(``ChainVerifier.accept_run``), so a lying hint, a bad chunk or a broken join
just stops the parallel part there; the entry-by-entry path takes over from that
point and names the first damage exactly as it would alone.

Workers are plain functions of picklable arguments, so every start method works.
``fork`` is used when this process runs no other thread (it is the cheapest), else
``forkserver`` or ``spawn``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import chain, pairwise
from multiprocessing.context import BaseContext
from pathlib import Path

from audit._runs import (
    MAX_LINE,
    Run,
    check_run,
    claimed_seq,
    decode_hashes,
    hashes_len,
    leaf_hashes,
)
from audit.errors import AuditError

__all__ = ["MAX_JOBS", "Chunk", "check_chunk", "default_jobs", "plan", "run_chunks"]

# A pool pays for itself from about this much of entries.jsonl on: ``fork`` starts a
# worker in ~10 ms, ``forkserver``/``spawn`` in ~0.3-0.8 s (a fresh interpreter
# importing this package), against ~2 us an entry (~500 bytes) in one process.
MIN_POOLED = 8 << 20
MIN_POOLED_COLD = 256 << 20
MAX_CHUNK = 32 << 20  # bounds each worker's memory on a huge (or hostile) bundle
MAX_JOBS = 8


def default_jobs() -> int:
    """One worker per core, at most ``MAX_JOBS`` (beyond that the disk is the limit)."""
    return max(1, min(os.cpu_count() or 1, MAX_JOBS))


@dataclass(frozen=True)
class Chunk:
    """One worker's share: entry lines in bytes ``[lo, hi)`` of the bundle's entries."""

    entries: str
    hashes: str
    lo: int
    hi: int
    start: int  # the bundle's first seq, where hashes.txt begins
    end: int  # one past its last seq
    prev_chain: bytes  # the manifest's chain hash before ``start``
    sizes: tuple[int, ...]  # checkpoint sizes
    full: bool


def plan(path: Path, jobs: int, chunk_bytes: int | None = None) -> list[tuple[int, int]]:
    """Byte ranges of ``path`` cut just after a newline near every ``chunk_bytes``.

    By default the file is split evenly over ``jobs`` (at most ``MAX_CHUNK`` each)
    once it is big enough for a pool to pay; one range means: no pool.
    """
    size = path.stat().st_size
    if chunk_bytes is None:
        pooled = MIN_POOLED if _context().get_start_method() == "fork" else MIN_POOLED_COLD
        if jobs < 2 or size < pooled:
            return [(0, size)] if size else []
        chunk_bytes = min(-(-size // jobs), MAX_CHUNK)
    cuts = [0]
    with open(path, "rb") as f:
        for c in range(chunk_bytes, size, chunk_bytes):
            if c <= cuts[-1]:
                continue
            f.seek(c - 1)
            at = f.read(MAX_LINE + 2).find(b"\n")
            if at >= 0 and c + at < size:
                cuts.append(c + at)
    cuts.append(size)
    return [(lo, hi) for lo, hi in pairwise(cuts) if lo < hi]


def _blocks(data: bytes, size: int = 1 << 20) -> Iterator[list[bytes]]:
    """The lines of ``data`` (which ends with a newline), a megabyte of them at a time."""
    pos = 0
    while pos < len(data):
        cut = data.find(b"\n", min(pos + size, len(data)) - 1) + 1
        lines = data[pos:cut].split(b"\n")
        lines.pop()
        yield lines
        pos = cut


def check_chunk(chunk: Chunk) -> Run | None:
    """The worker: one chunk checked whole, or None if anything in it is off."""
    try:
        with open(chunk.entries, "rb") as f:
            f.seek(chunk.lo)
            data = f.read(chunk.hi - chunk.lo)
        if len(data) != chunk.hi - chunk.lo or not data.endswith(b"\n"):
            return None
        blocks = _blocks(data)
        head = next(blocks)
        first = chunk.start if chunk.lo == 0 else claimed_seq(head[0][:MAX_LINE])
        if first is None or first < chunk.start:
            return None
        leaves = leaf_hashes(chain([head], blocks), first, chunk.full)
        if leaves is None or first + len(leaves) > chunk.end:
            return None
        with open(chunk.hashes, "rb") as f:
            anchor = chunk.prev_chain
            if first > chunk.start:  # the stored link just before the chunk
                f.seek(hashes_len(chunk.start, first - 1))
                line = decode_hashes(f.read(hashes_len(first - 1, first)), first - 1, first)
                if line is None:
                    return None
                anchor = line[32:]
            region = f.read(hashes_len(first, first + len(leaves)))
        last = data[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1]
        return check_run(leaves, last, region, first, anchor, chunk.sizes)
    except (OSError, ValueError, AuditError, RecursionError):
        return None  # the entry-by-entry path meets the same problem and reports it


def _context() -> BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_chunks(
    chunks: Sequence[Chunk], jobs: int, method: str | None = None
) -> Generator[Run | None, None, None]:
    """Each chunk's result, in order, checked by ``jobs`` worker processes.

    This process takes the first chunk itself while the workers start. Stop
    iterating (and close the iterator) to cancel what has not started. A worker pool
    that breaks yields None: the caller carries on without it.
    """
    if jobs <= 1 or len(chunks) < 2:
        yield from map(check_chunk, chunks)
        return
    ctx = multiprocessing.get_context(method) if method else _context()
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(chunks) - 1), mp_context=ctx)
    try:
        rest = pool.map(check_chunk, chunks[1:])
        yield check_chunk(chunks[0])  # while the workers start up
        yield from rest
    except BrokenProcessPool:
        yield None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
