"""The appender: gapless under concurrency, all-or-nothing under kill -9, append-only
on both databases, and fail-closed when the store refuses the write."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import AuditLog, AuditUnavailable, EntryInvalid, engine_for
from audit.entry import parse_entry
from tests.audit.conftest import LogFactory, entry, log_signer, stored_rows

ROOT = Path(__file__).resolve().parents[2]


def _spawn(url: str, node: str, batches: int, size: int, threads: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.audit.appender_proc",
            url,
            node,
            *map(str, (batches, size, threads)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _batches(log_entries: list[bytes]) -> collections.Counter[str]:
    return collections.Counter(parse_entry(d)["detail"]["batch"] for d in log_entries)


@pytest.mark.postgres
def test_four_processes_append_one_gapless_chain(pg_url: str, make_log: LogFactory) -> None:
    log = make_log(pg_url)
    procs = [_spawn(pg_url, f"node-{n}", 30, 5, 3) for n in range(4)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    report = log.verify()
    assert report.ok and report.size == 4 * 30 * 5, report.to_json()
    rows = log.entries(0, 10_000)
    assert [e.seq for e in rows] == list(range(600))
    counts = _batches([e.entry_bytes for e in rows])
    assert len(counts) == 120 and set(counts.values()) == {5}
    # every batch is contiguous: an append_many is one slice of the chain
    for b in counts:
        seqs = [e.seq for e in rows if parse_entry(e.entry_bytes)["detail"]["batch"] == b]
        assert seqs == list(range(seqs[0], seqs[0] + 5))
    # and each process's acknowledged seqs are exactly where its entries are
    for out, _ in outs:
        for line in out.splitlines():
            _, batch, first, last = line.split()
            doc = parse_entry(rows[int(first)].entry_bytes)
            assert doc["detail"]["batch"] == batch and int(last) == int(first) + 4


def test_kill_9_mid_stream_leaves_no_partial_batch(db_url: str, make_log: LogFactory) -> None:
    log = make_log(db_url)
    proc = _spawn(db_url, "victim", 0, 50, 4)
    acked: list[tuple[str, int, int]] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while len(acked) < 20 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        _, b, first, last = line.split()
        acked.append((b, int(first), int(last)))
    assert len(acked) >= 20, proc.stderr.read() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    report = log.verify()
    assert report.ok, report.to_json()
    rows = log.entries(0, 100_000)
    assert [e.seq for e in rows] == list(range(report.size))
    counts = _batches([e.entry_bytes for e in rows])
    assert set(counts.values()) == {50}, "a batch was half written"
    for b, first, last in acked:  # everything acknowledged is durable, where it was said to be
        assert counts[b] == 50
        assert parse_entry(rows[first].entry_bytes)["detail"]["batch"] == b
        assert parse_entry(rows[last].entry_bytes)["detail"]["batch"] == b
    # the log keeps working after the crash
    assert log.append(entry(0)).seq == report.size


def test_threads_share_one_gapless_chain(sqlite_url: str, make_log: LogFactory) -> None:
    log = make_log(sqlite_url, max_batch=64, max_wait_ms=1.0)
    seqs: list[int] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(40):
            s = log.append(entry(t * 100 + i)).seq
            with lock:
                seqs.append(s)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(seqs) == list(range(320))
    assert log.verify().ok


async def test_append_async_does_not_block_and_is_durable(
    sqlite_url: str, make_log: LogFactory
) -> None:
    import asyncio

    log = make_log(sqlite_url)
    got = await asyncio.gather(*(log.append_async(entry(i)) for i in range(30)))
    assert sorted(a.seq for a in got) == list(range(30))
    assert log.head().size == 30


@pytest.mark.parametrize(
    "bad",
    [
        {"event": "exchange", "seq": 3},
        {"event": "exchange", "given_name": "Alice"},
        {"event": "not-an-event"},
        {"event": "exchange", "subject": "AB12 345"},
        {"event": "exchange", "detail": {"nested": {"x": 1}}},
        {"event": "exchange", "latency_ms": float("nan")},
        {"actor": "no-event"},
    ],
)
def test_bad_entries_are_refused_before_queueing(
    sqlite_url: str, make_log: LogFactory, bad: dict[str, object]
) -> None:
    log = make_log(sqlite_url)
    with pytest.raises(EntryInvalid):
        log.append(bad)
    assert log.append(entry(1)).seq == 0  # nothing was consumed


def test_append_in_commits_and_rolls_back_with_the_caller(
    db_url: str, make_log: LogFactory
) -> None:
    log = make_log(db_url)
    log.append(entry(0))
    with log.engine.connect() as conn:
        conn.begin()
        assert log.append_in(conn, entry(1)).seq == 1
        conn.rollback()
    assert log.head().size == 1
    with log.engine.begin() as conn:
        assert log.append_in(conn, entry(2)).seq == 1
    assert log.append(entry(3)).seq == 2
    assert log.verify().ok


def _refused(engine: sa.Engine, stmt: str) -> None:
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        conn.execute(sa.text(stmt))


def test_audit_tables_are_append_only(db_url: str, make_log: LogFactory) -> None:
    log = make_log(db_url)
    for i in range(4):
        log.append(entry(i))
    log.checkpoint()
    eng = log.engine
    for table, col in [
        ("audit_entries", "event"),
        ("audit_nodes", "hash"),
        ("audit_checkpoints", "note"),
    ]:
        value = "'x'" if col in ("event", "note") else "X'00'"
        if eng.dialect.name == "postgresql" and col == "hash":
            value = "'\\x00'::bytea"
        _refused(eng, f"UPDATE {table} SET {col} = {value}")
        _refused(eng, f"DELETE FROM {table}")
        if eng.dialect.name == "postgresql":
            _refused(eng, f"TRUNCATE {table}")
    _refused(eng, "UPDATE audit_head SET size = 1")
    _refused(eng, "DELETE FROM audit_head")
    if eng.dialect.name == "postgresql":
        _refused(eng, "TRUNCATE audit_head")
    assert log.verify().ok and log.head().size == 4


def test_store_refusing_the_write_makes_append_raise(sqlite_url: str, make_log: LogFactory) -> None:
    log = make_log(sqlite_url)
    log.append(entry(0))
    with log.engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
                "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
            )
        )
    with pytest.raises(AuditUnavailable):
        log.append(entry(1))
    with log.engine.connect() as conn:
        conn.begin()
        with pytest.raises(AuditUnavailable):
            log.append_in(conn, entry(1))
    assert log.head().size == 1 and log.verify().ok


def test_unreachable_database_makes_append_raise(tmp_path: Path, make_log: LogFactory) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}", timeout_s=20)
    log.append(entry(0))
    log.engine.dispose()
    (tmp_path / "a.db").unlink()
    for p in tmp_path.glob("a.db-*"):
        p.unlink()
    (tmp_path / "a.db").mkdir()  # the path is now a directory: no database can open
    with pytest.raises(AuditUnavailable):
        log.append(entry(1))


@pytest.mark.postgres
def test_application_role_grants_make_the_log_append_only(
    pg_url: str, make_log: LogFactory
) -> None:
    """The grants docs/audit.md gives the application role, exercised for real."""
    owner = make_log(pg_url)
    owner.append(entry(0))
    role = "accord_app_" + os.urandom(4).hex()
    with owner.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(
            sa.text(
                f"GRANT SELECT, INSERT ON audit_entries, audit_nodes, audit_checkpoints, "
                f"audit_cosignatures TO {role}"
            )
        )
        conn.execute(sa.text(f"GRANT SELECT, UPDATE ON audit_head TO {role}"))
    app_url = sa.make_url(pg_url).set(username=role).render_as_string(hide_password=False)
    app = AuditLog(engine_for(app_url), signer=log_signer(), checkpoint_every=0)
    for i in range(1, 5):
        assert app.append(entry(i)).seq == i
    app.checkpoint()
    with pytest.raises(sa.exc.DBAPIError), app.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entries"))
    with owner.engine.begin() as conn:
        conn.execute(sa.text(f"REVOKE INSERT ON audit_entries FROM {role}"))
    with pytest.raises(AuditUnavailable):
        app.append(entry(5))
    assert owner.verify().ok and owner.head().size == 5
    app.close()
    app.engine.dispose()
    with owner.engine.begin() as conn:
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
        conn.execute(sa.text(f"DROP ROLE {role}"))


def test_engine_for_sqlite_uses_wal(tmp_path: Path) -> None:
    eng = engine_for(f"sqlite:///{tmp_path / 'x' / 'a.db'}")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    eng.dispose()


def test_sqlite_batches_store_exactly_what_the_portable_path_stores(
    tmp_path: Path, make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's batch transaction is plain SQL; ``append_in`` (and PostgreSQL) go
    through SQLAlchemy. Both must write the same rows and the same head."""
    from audit import appender

    monkeypatch.setattr(appender, "now_ts", lambda: "2026-06-01T12:00:00.000Z")
    batches = [[entry(i) for i in range(k, k + n)] for k, n in ((0, 1), (1, 3), (4, 6))]
    plain = make_log(f"sqlite:///{tmp_path / 'plain.db'}")
    for batch in batches:
        results, _wal = appender.commit_batch(plain.engine, "node-1", [batch[:1], batch[1:]])
        assert not any(isinstance(r, Exception) for r in results)
    portable = make_log(f"sqlite:///{tmp_path / 'portable.db'}")
    for batch in batches:
        for part in (batch[:1], batch[1:]):
            if part:
                with portable.engine.begin() as conn:
                    appender.append_in(conn, "node-1", part)

    got, want = stored_rows(plain), stored_rows(portable)
    assert len(got["audit_entries"]) == 10
    assert got == want
    assert plain.verify().ok
