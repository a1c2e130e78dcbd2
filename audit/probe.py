"""The write probe: does the audit store take a batch right now?

Readiness asks it, so that a store that stopped taking appends is seen before an
exchange fails on it, and one that takes them again is seen without any exchange.
It runs the batch's own statements (``audit.appender``) and rolls them back.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import store
from audit.appender import (
    ADVANCE_HEAD,
    ADVANCE_SQL,
    ENTRY_SQL,
    HEAD_SQL,
    INSERTS,
    NO_HEAD,
    lock_head,
    now_ts,
    refused,
    rollback_quietly,
)
from audit.errors import AuditError, AuditUnavailable
from audit.health import health_of

__all__ = ["PROBE_WAIT_MS", "probe_write"]

#: How long the write probe waits for the chain head, in milliseconds: a head held
#: longer than this stalls every append too.
PROBE_WAIT_MS = 2000


def probe_write(engine: Engine) -> bool:
    """Whether the store takes a batch now: lock the head, insert a row, advance the
    head, then roll it all back. Raises ``AuditUnavailable`` when a step is refused
    (the locked head, a refused insert, a full disk, a lost connection); False when
    another writer of this process holds SQLite's write turn (it is writing, and its
    batch reports for itself). Records the outcome in ``health_of(engine)``.

    Readiness uses it so that a store that stopped taking appends is seen without
    waiting for an exchange to fail, and one that takes them again is seen without
    any exchange (none arrives while the gateway is reported unready)."""
    health = health_of(engine)
    try:
        if engine.dialect.name == "sqlite":
            try:
                with (
                    store.write_lock(engine, wait=False),
                    store.short_busy_wait(),
                    engine.connect() as conn,
                ):
                    _probe_sqlite(conn.connection.dbapi_connection)
            except store.TurnBusy:
                return False
        else:
            with engine.connect() as conn:
                try:
                    conn.execute(sa.text(f"SET LOCAL lock_timeout = {PROBE_WAIT_MS}"))
                    _probe_rows(conn, lock_head(conn))
                finally:
                    conn.rollback()
    except SQLAlchemyError as exc:
        failure = refused(exc)
        health.failed(failure)
        raise failure from exc
    except AuditError as exc:
        health.failed(exc)
        raise
    except OSError as exc:  # SQLite's turn file
        failure = refused(exc)
        health.failed(failure)
        raise failure from exc
    health.wrote()
    return True


def _probe_params(size: int) -> dict[str, Any]:
    return {
        "seq": size,
        "ts": now_ts(),
        "event": "write_probe",
        "exchange_id": None,
        "subject": None,
        "data": b"{}",
        "leaf_hash": bytes(32),
        "chain_hash": bytes(32),
    }


def _probe_rows(conn: sa.Connection, row: sa.Row[Any]) -> None:
    size = int(row.size)
    conn.execute(INSERTS["audit_entries"], [_probe_params(size)])
    upd = conn.execute(
        ADVANCE_HEAD,
        {
            "locked_size": size,
            "new_size": size + 1,
            "new_chain": bytes(32),
            "new_frontier": bytes(row.frontier),
            "new_ts": now_ts(),
        },
    )
    if upd.rowcount != 1:
        raise AuditUnavailable("the chain head moved while locked")


def _probe_sqlite(raw: Any) -> None:
    cur = raw.cursor()
    try:
        cur.execute("BEGIN IMMEDIATE")
        head = cur.execute(HEAD_SQL).fetchone()
        if head is None:
            raise AuditUnavailable(NO_HEAD)
        size = int(head[0])
        cur.execute(ENTRY_SQL, _probe_params(size))
        cur.execute(
            ADVANCE_SQL,
            {
                "new_size": size + 1,
                "new_chain": bytes(32),
                "new_frontier": bytes(head[2]),
                "new_ts": now_ts(),
                "locked_size": size,
            },
        )
        if cur.rowcount != 1:
            raise AuditUnavailable("the chain head moved while locked")
    except sqlite3.Error as exc:
        raise refused(exc) from exc
    finally:
        rollback_quietly(raw)
        cur.close()
