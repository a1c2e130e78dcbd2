"""Each node's background watch (``audit.watch.LogWatch``): it verifies what was appended
since its last pass and stops the log by itself on damage, with no status call, on
SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from audit import AuditLog
from audit.errors import AuditUnavailable
from audit.health import health_of
from audit.watch import LogWatch
from tests.audit.conftest import LogFactory, entry


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


def _appended(log: AuditLog, start: int, end: int) -> None:
    for i in range(start, end):
        log.append(entry(i))


def _marker(log: AuditLog) -> list[tuple[object, ...]]:
    with log.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql("SELECT kind, seq, node FROM audit_damage")]


def _unguarded(conn: sa.Connection, table: str) -> None:
    """What an operator with the schema owner's rights can do: switch the table's
    append-only guards off."""
    if conn.dialect.name == "sqlite":
        for (name,) in conn.exec_driver_sql(
            f"SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='{table}'"
        ).all():
            conn.exec_driver_sql(f"DROP TRIGGER {name}")
    else:
        conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")


def _rewrite_entry(log: AuditLog, seq: int) -> None:
    """Change one byte of a stored entry."""
    with log.engine.begin() as conn:
        _unguarded(conn, "audit_entries")
        q = sa.text("SELECT data FROM audit_entries WHERE seq = :s")
        data = bytes(conn.execute(q, {"s": seq}).scalar_one())
        conn.execute(
            sa.text("UPDATE audit_entries SET data = :d WHERE seq = :s"),
            {"d": data[:10] + bytes([data[10] ^ 1]) + data[11:], "s": seq},
        )


def test_a_head_rewritten_under_a_running_node_stops_it_without_a_status_call(
    db_url: str, make_log: LogFactory
) -> None:
    """As the damaged-log tests do: the chain head's hash is overwritten in the
    database. Nobody asks for the status; the node's own watch finds it, stops
    the node and leaves the marker for the others."""
    log = make_log(db_url, node="gw-a")
    _appended(log, 0, 10)
    log.checkpoint()
    _appended(log, 10, 15)
    watch = LogWatch(log, verify_interval_s=0.05, poll_interval_s=0)
    watch.start()
    try:
        _until(lambda: watch.verified_size == 15, "the watch never verified the log")
        with log.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE audit_head SET chain_hash = :c WHERE id = 1"), {"c": bytes(32)}
            )
        _until(lambda: health_of(log.engine).damage is not None, "the node never stopped")
    finally:
        watch.stop()
    assert _marker(log) == [("head_mismatch", 14, "gw-a")]
    with pytest.raises(AuditUnavailable) as stopped:
        log.append(entry(15))
    assert stopped.value.code == "audit_log_damaged"


def test_each_pass_verifies_only_what_was_appended_since_the_last(
    db_url: str, make_log: LogFactory
) -> None:
    log = make_log(db_url)
    _appended(log, 0, 8)
    log.checkpoint()
    _appended(log, 8, 12)
    watch = LogWatch(log, verify_interval_s=0, poll_interval_s=0)
    first = watch.verify_once()
    # The first pass starts at the newest checkpoint, its frontier held to the note.
    assert first is not None and first.ok and (first.start, first.size) == (8, 12)
    assert first.checkpoints_verified == 1
    _appended(log, 12, 20)
    log.checkpoint()
    _appended(log, 20, 21)
    second = watch.verify_once()
    assert second is not None and second.ok and (second.start, second.size) == (12, 21)
    assert second.checkpoints_verified == 1  # the checkpoint of 20, against the recomputed root
    idle = watch.verify_once()
    assert idle is not None and idle.ok and (idle.start, idle.size) == (21, 21)


def test_an_entry_changed_since_the_last_pass_is_named_and_stops_the_log(
    db_url: str, make_log: LogFactory
) -> None:
    log = make_log(db_url, node="gw-b")
    _appended(log, 0, 6)
    watch = LogWatch(log, verify_interval_s=0, poll_interval_s=0)
    assert watch.verify_once() is not None
    _appended(log, 6, 12)
    _rewrite_entry(log, 9)
    report = watch.verify_once()
    assert report is not None and not report.ok
    assert report.damage is not None and (report.kind, report.damage.seq) == ("entry_changed", 9)
    assert _marker(log) == [("entry_changed", 9, "gw-b")]
    assert health_of(log.engine).damage is not None
    assert watch.verify_once() is None  # stopped: nothing to watch until it is cleared


def test_a_forged_checkpoint_frontier_is_not_taken_as_the_starting_point(
    db_url: str, make_log: LogFactory
) -> None:
    """The first pass starts from the stored tree nodes of the newest checkpoint: a
    node changed there no longer gives the signed root, and that is damage."""
    log = make_log(db_url)
    _appended(log, 0, 8)
    log.checkpoint()
    with log.engine.begin() as conn:
        _unguarded(conn, "audit_nodes")
        conn.execute(
            sa.text("UPDATE audit_nodes SET hash = :h WHERE level = 3"), {"h": b"\x01" * 32}
        )
    report = LogWatch(log, verify_interval_s=0, poll_interval_s=0).verify_once()
    assert report is not None and report.kind == "checkpoint_mismatch", report


def test_appends_committed_during_a_pass_are_never_taken_for_damage(
    db_url: str, make_log: LogFactory
) -> None:
    log = make_log(db_url)
    _appended(log, 0, 5)
    watch = LogWatch(log, verify_interval_s=0, poll_interval_s=0)
    done = threading.Event()

    def appender() -> None:
        for i in range(5, 205):
            log.append(entry(i))
        done.set()

    thread = threading.Thread(target=appender)
    thread.start()
    passes = 0
    while not done.is_set() or passes == 0:
        report = watch.verify_once()
        assert report is not None and report.ok, report
        passes += 1
    thread.join()
    last = watch.verify_once()
    assert last is not None and last.ok and last.size == 205
    assert health_of(log.engine).damage is None


def test_the_watch_reads_the_marker_so_an_idle_node_stops_appending(
    db_url: str, make_log: LogFactory
) -> None:
    """A node that serves no exchanges (so never polls on the exchange path) still
    stops appending once another node left the damage marker."""
    log = make_log(db_url, node="gw-c")
    _appended(log, 0, 3)
    health = health_of(log.engine)
    with log.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO audit_damage (id, kind, seq, detail, node, detected_at) "
            "VALUES (1, 'entry_changed', 1, 'found by another node', 'gw-z', 't')"
        )
    watch = LogWatch(log, verify_interval_s=0, poll_interval_s=0.05)
    assert health.damage is None
    watch.start()
    try:
        _until(lambda: health.damage is not None, "the idle node never read the marker")
    finally:
        watch.stop()
    with pytest.raises(AuditUnavailable) as stopped:
        log.append(entry(3))
    assert stopped.value.code == "audit_log_damaged"
