"""Audit log throughput and proof latency, each beside a baseline from the same run.

    .venv/bin/python -m bench.bench_audit [--seconds 3] [--verify-n 100000] [--jobs N]
        [--proof-sizes 10000,100000,1000000] [--no-postgres] [--only append|verify|proofs]

1. **Append** entries/s on SQLite and PostgreSQL for batch sizes 1, 10, 100 and
   1000 (``append_many`` of that many entries: one transaction, one chain-head
   lock), plus 32 threads calling ``append`` (group commit). Baseline: plain
   INSERTs of the same bytes in transactions of the same size into a table with no
   hashing, lock or triggers. Target: >= 10,000 entries/s on PostgreSQL batched.
2. **Verify** entries/s of an exported bundle (``verify_export``, hashes-only and
   full, in one process and on ``--jobs`` worker processes) against raw ``hashlib``
   SHA-256 of the same lines, one hash per entry: in memory on one thread (the
   baseline the target is judged on), reading the file, spread over the same
   worker processes, and one streaming hash of the whole file. Target: >= 50% of
   the single-thread per-entry hashlib rate. The hashes-only rows run on the
   native core (``audit._sha256``) and on the pure-Python fallback, alternately.
3. **Proofs**: inclusion and consistency proof time at 10^4, 10^5 and 10^6
   entries (tree bulk-built row by row), beside the client-side verification of the
   same proof. Target: a proof in < 10 ms at 10^6.

PostgreSQL comes from ``ACCORD_TEST_PG_URL`` or an ephemeral cluster on a free
loopback port, removed at the end. Every loop is bounded by a count and a time
budget; nothing here leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit import AuditLog, NoteSigner, _runs, engine_for, verify_export  # noqa: E402
from audit._parallel import default_jobs, plan, worker_context  # noqa: E402
from audit.entry import seal  # noqa: E402
from audit.merkle import verify_consistency, verify_inclusion  # noqa: E402
from bench._audit_support import (  # noqa: E402
    TS,
    best,
    best_alternating,
    bulk_build,
    hashing_core,
    hashlib_alone,
    hashlib_over_processes,
)


def entry(i: int) -> dict[str, Any]:
    """A realistic exchange entry (~350 bytes canonical)."""
    return {
        "event": "exchange",
        "exchange_id": f"ex-{i}",
        "actor": "welfare-office/case-system",
        "consumer": "welfare-office",
        "provider": "civil-registry",
        "agreement": "person-lookup@3",
        "dataset": "person",
        "purpose": "benefit-eligibility",
        "fields": ["given_name", "birth_date"],
        "decision": "allow",
        "request_sha256": f"{i:064x}",
        "subject": f"pseudonym-{i:010d}",
        "outcome": "released",
        "status": 200,
        "latency_ms": 12.5,
    }


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}/s" if seconds > 0 else "         n/a"


def ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}x" if b else "   n/a"


# -- databases ---------------------------------------------------------------


@contextmanager
def postgres_server() -> Iterator[str | None]:
    env = os.environ.get("ACCORD_TEST_PG_URL")
    if env:
        yield env
        return
    try:
        from tests._support.servers import PostgresCluster
    except ImportError:
        yield None
        return
    try:
        cluster = PostgresCluster()
    except (RuntimeError, OSError) as exc:
        print(f"(no PostgreSQL: {exc})")
        yield None
        return
    try:
        yield cluster.url
    finally:
        cluster.stop()


def fresh_url(kind: str, pg: str | None, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / f'{os.urandom(4).hex()}.db'}"
    assert pg is not None
    from tests._support.servers import fresh_database

    return fresh_database(pg)


# -- 1. append ---------------------------------------------------------------


def bench_append_one(url: str, batch: int, budget_s: float, cap: int) -> tuple[int, float]:
    engine = engine_for(url)
    log = AuditLog(engine, node="bench", max_batch=max(batch, 256), checkpoint_every=0)
    log.create_schema()
    entries = [entry(i) for i in range(batch)]
    n, start = 0, time.perf_counter()
    while n < cap and time.perf_counter() - start < budget_s:
        log.append_many(entries)
        n += batch
    took = time.perf_counter() - start
    log.close()
    engine.dispose()
    return n, took


def bench_append_threads(url: str, threads: int, budget_s: float, cap: int) -> tuple[int, float]:
    engine = engine_for(url)
    log = AuditLog(engine, node="bench", max_batch=1000, max_wait_ms=2, checkpoint_every=0)
    log.create_schema()
    count = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + budget_s

    def work(t: int) -> None:
        i = 0
        while time.perf_counter() < stop and count[0] < cap:
            log.append(entry(t * 1_000_000 + i))
            i += 1
            with lock:
                count[0] += 1

    start = time.perf_counter()
    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.perf_counter() - start
    log.close()
    engine.dispose()
    return count[0], took


def bench_raw_insert(url: str, batch: int, budget_s: float, cap: int) -> tuple[int, float]:
    engine = engine_for(url)
    meta = sa.MetaData()
    raw = sa.Table(
        "raw_entries",
        meta,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    meta.create_all(engine)
    datas = [seal(entry(i), seq=i, ts=TS, node="bench") for i in range(batch)]
    n, start = 0, time.perf_counter()
    while n < cap and time.perf_counter() - start < budget_s:
        with engine.begin() as conn:
            conn.execute(raw.insert(), [{"seq": n + i, "data": d} for i, d in enumerate(datas)])
        n += batch
    took = time.perf_counter() - start
    engine.dispose()
    return n, took


def section_append(kinds: list[str], pg: str | None, tmp: Path, budget: float) -> None:
    print("\n== append: audit log vs plain INSERT of the same bytes ==")
    print("   (target: >= 10,000 entries/s on PostgreSQL with batching)")
    print(f"{'store':<11}{'batch':>9}{'audit':>16}{'plain insert':>16}{'audit/plain':>13}")
    for kind in kinds:
        for batch in (1, 10, 100, 1000):
            cap = max(2000, batch * 200)
            n, t = bench_append_one(fresh_url(kind, pg, tmp), batch, budget, cap)
            rn, rt = bench_raw_insert(fresh_url(kind, pg, tmp), batch, budget, cap)
            print(
                f"{kind:<11}{batch:>9}{rate(n, t):>16}{rate(rn, rt):>16}{ratio(n / t, rn / rt):>13}"
            )
        n, t = bench_append_threads(fresh_url(kind, pg, tmp), 32, budget, 200_000)
        print(f"{kind:<11}{'32 thr':>9}{rate(n, t):>16}{'':>16}{'':>13}  (group commit)")


# -- 2. verify ---------------------------------------------------------------


def section_verify(tmp: Path, n: int, jobs: int) -> None:
    print(f"\n== verify an export of {n:,} entries vs raw hashlib on the same bytes ==")
    print("   (target: >= 0.50x the single-thread per-entry hashlib rate, in memory;")
    print("    verifying costs 3 SHA-256 an entry, hashlib 1)")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = NoteSigner("bench.local/audit", Ed25519PrivateKey.generate())
    engine = engine_for(f"sqlite:///{tmp / 'verify.db'}")
    bulk_build(engine, (seal(entry(i), seq=i, ts=TS, node="bench") for i in range(n)), signer)
    log = AuditLog(engine, signer=signer, checkpoint_every=0)
    log.export(0, n, tmp / "export")
    log.close()
    engine.dispose()
    path = tmp / "export" / "entries.jsonl"
    t_raw, t_file, t_stream = hashlib_alone(path)
    mb = path.stat().st_size / 1e6

    def spread() -> None:
        if hashlib_over_processes(path, jobs) != n:
            raise RuntimeError("the spread hashlib baseline lost lines")

    key = signer.verifier()

    def run(full: bool, j: int) -> None:
        r = verify_export(tmp / "export", log_key=key, witness_keys=[], full=full, jobs=j)
        if not r.ok or r.size != n:
            raise RuntimeError(f"the benchmark bundle did not verify: {r.to_json()}")

    split = len(plan(path, jobs)) > 1
    used = f"{jobs} processes" if split else "1 process: too small to split"
    method = worker_context().get_start_method()
    print(f"   (--jobs {jobs}: {method} workers; the bundle takes {used})")
    cores = [c for c in (_runs.NATIVE, _runs.HASHLIB) if c is not None]
    if _runs.NATIVE is None:
        print("   (hashing core: hashlib; audit._sha256 was not built)")
    else:
        print("   (hashing core: native, audit._sha256; [hashlib] rows force the fallback)")

    def on(core: _runs.Core, full: bool, j: int) -> Callable[[], None]:
        def go() -> None:
            with hashing_core(core):
                run(full, j)

        return go

    # Workers that are not forked start with the default core: the fallback can be
    # forced on them only when forked (or when there are none).
    forced = not split or method == "fork"

    def hashes_only(j: int) -> list[tuple[str, float]]:
        pick = cores if j == 1 or forced else [_runs.core]
        times = best_alternating([on(c, False, j) for c in pick], reps=5)
        return [
            (f"verify_export --hashes-only --jobs {j} [{c.name}]", t)
            for c, t in zip(pick, times, strict=True)
        ]

    rows: list[tuple[str, float, int | None]] = [
        ("hashlib sha256 per entry (in memory)", t_raw, None),
        ("hashlib sha256 per entry (reading the file)", t_file, None),
        (f"hashlib sha256 streaming, whole file ({mb:.0f} MB)", t_stream, None),
        (f"hashlib sha256 per entry, {jobs} processes", best(spread, reps=5), None),
    ]
    for j in sorted({1, jobs}):
        rows += [(what, t, 3 if j == jobs else None) for what, t in hashes_only(j)]
    for j in sorted({1, jobs}):
        t = best(partial(run, True, j), reps=1)
        rows.append(
            (f"verify_export full --jobs {j} [{_runs.core.name}]", t, 3 if j == jobs else None)
        )
    print(f"{'what':<52}{'entries/s':>14}{'vs hashlib/entry':>18}{'vs same procs':>15}")
    for what, t, baseline in rows:
        same = ratio(rows[baseline][1], t) if baseline is not None else ""
        print(f"{what:<52}{rate(n, t):>14}{ratio(t_raw, t):>18}{same:>15}")


# -- 3. proofs ---------------------------------------------------------------


def minimal(i: int) -> bytes:
    """A canonical entry written by hand, so a million of them are quick to make."""
    return (
        b'{"event":"exchange","exchange_id":"ex-%d","node":"bench","seq":%d,'
        b'"ts":"2026-06-01T12:00:00.000Z","v":1}' % (i, i)
    )


def section_proofs(tmp: Path, sizes: list[int], probes: int) -> None:
    print("\n== proofs (SQLite; tree bulk-built; target: < 10 ms at 10^6) ==")
    print(
        f"{'entries':>10}{'build':>10}{'inclusion':>14}{'consistency':>14}"
        f"{'client verify':>16}{'serve/verify':>14}"
    )
    rnd = random.Random(7)
    for n in sizes:
        engine = engine_for(f"sqlite:///{tmp / f'proofs-{n}.db'}")
        t0 = time.perf_counter()
        bulk_build(engine, (minimal(i) for i in range(n)), None)
        build = time.perf_counter() - t0
        log = AuditLog(engine, checkpoint_every=0)
        seqs = [rnd.randrange(n) for _ in range(probes)]
        t = time.perf_counter()
        proofs = [log.inclusion_proof(s, n) for s in seqs]
        t_inc = (time.perf_counter() - t) / probes
        olds = [rnd.randrange(1, n) for _ in range(probes)]
        t = time.perf_counter()
        cons = [log.consistency_proof(o, n) for o in olds]
        t_con = (time.perf_counter() - t) / probes
        t = time.perf_counter()
        for p in proofs:
            verify_inclusion(p.leaf_hash, p.seq, p.tree_size, p.hashes, p.root)
        for c in cons:
            verify_consistency(c.old_size, c.new_size, c.old_root, c.new_root, c.hashes)
        t_ver = (time.perf_counter() - t) / (2 * probes)
        log.close()
        engine.dispose()
        print(
            f"{n:>10,}{build:>9.1f}s{t_inc * 1e3:>12.3f}ms{t_con * 1e3:>12.3f}ms"
            f"{t_ver * 1e3:>14.3f}ms{ratio(t_inc, t_ver):>14}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time budget per append row")
    ap.add_argument("--verify-n", type=int, default=100_000)
    ap.add_argument("--proof-sizes", default="10000,100000,1000000")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--only", choices=["append", "verify", "proofs"], default=None)
    ap.add_argument(
        "--jobs", type=int, default=default_jobs(), help="verify_export worker processes"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="accord-bench-audit-"))
    try:
        if args.only in (None, "append"):
            with postgres_server() if not args.no_postgres else _none() as pg:
                kinds = ["sqlite"] + (["postgresql"] if pg else [])
                section_append(kinds, pg, tmp, args.seconds)
        if args.only in (None, "verify"):
            section_verify(tmp, args.verify_n, args.jobs)
        if args.only in (None, "proofs"):
            sizes = [int(x) for x in args.proof_sizes.split(",") if x]
            section_proofs(tmp, sizes, args.probes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _none() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
