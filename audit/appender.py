"""Writing a batch: one transaction that extends one gapless chain.

A batch is sealed and inserted while the transaction holds the chain-head lock
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite). The
lock, not the process, is the sequencing point, so several processes and nodes
extend the same chain. A batch is all or nothing: a process killed mid-batch
leaves no partial batch and no gap. ``audit.committer`` groups callers into
batches; ``append_in`` appends inside a caller's own transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import store
from audit.durability import drop_lazy_connection, engine_wal, lazy_connection, sync_wal
from audit.entry import chain_hash, format_ts, seal
from audit.errors import AuditError, AuditUnavailable, EntryInvalid
from audit.health import health_of
from audit.merkle import CompactRange, leaf_hash
from audit.records import Appended

__all__ = [
    "Sealed",
    "append_in",
    "commit_batch",
    "write_batch",
]

# Built once: constructing a statement and its cache key per batch cost more than
# running it.
LOCK_HEAD = sa.select(store.head).where(store.head.c.id == 1).with_for_update()
ADVANCE_HEAD = (
    store.head.update()
    .where(store.head.c.id == 1, store.head.c.size == sa.bindparam("locked_size"))
    .values(
        size=sa.bindparam("new_size"),
        chain_hash=sa.bindparam("new_chain"),
        frontier=sa.bindparam("new_frontier"),
        ts=sa.bindparam("new_ts"),
    )
)
INSERTS = {t.name: t.insert() for t in (store.entries, store.nodes)}
NO_HEAD = "the audit chain head is missing: run create_schema()"


def lock_head(conn: sa.Connection) -> sa.Row[Any]:
    row = conn.execute(LOCK_HEAD).first()
    if row is None:
        raise AuditUnavailable(NO_HEAD)
    return row


def now_ts() -> str:
    return format_ts(datetime.now(UTC))


@dataclass(frozen=True)
class Sealed:
    """A batch sealed after the locked head: what to insert and the new head."""

    results: list[list[Appended] | AuditError]
    entry_rows: list[dict[str, Any]]
    node_rows: list[dict[str, Any]]
    size: int
    chain: bytes
    frontier: bytes
    ts: str


def seal_after(
    node: str,
    ts: str,
    head: tuple[int, bytes, bytes],
    requests: Sequence[Sequence[Mapping[str, Any]]],
) -> Sealed:
    """Seal every request at ``ts`` after the head ``(size, chain, frontier)``; pure."""
    results: list[list[Appended] | AuditError] = []
    size, chain, frontier = head
    cr = CompactRange.from_bytes(size, frontier)
    entry_rows: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    for entries in requests:
        try:
            sealed = [seal(e, seq=size + i, ts=ts, node=node) for i, e in enumerate(entries)]
        except EntryInvalid as exc:
            results.append(exc)
            continue
        out: list[Appended] = []
        for e, data in zip(entries, sealed, strict=True):
            lh = leaf_hash(data)
            chain = chain_hash(chain, lh)
            for level, idx, h in cr.append(lh):
                node_rows.append({"level": level, "idx": idx, "hash": h})
            entry_rows.append(
                {
                    "seq": size,
                    "ts": ts,
                    "event": e["event"],
                    "exchange_id": e.get("exchange_id"),
                    "subject": e.get("subject"),
                    "data": data,
                    "leaf_hash": lh,
                    "chain_hash": chain,
                }
            )
            out.append(Appended(size, lh, chain, data, ts))
            size += 1
        results.append(out)
    return Sealed(results, entry_rows, node_rows, size, chain, cr.to_bytes(), ts)


def _write_locked(
    conn: sa.Connection,
    node: str,
    row: sa.Row[Any],
    requests: Sequence[Sequence[Mapping[str, Any]]],
) -> list[list[Appended] | AuditError]:
    """Seal and insert every request after ``row`` (the locked head); advance the head."""
    head = (int(row.size), bytes(row.chain_hash), bytes(row.frontier))
    b = seal_after(node, now_ts(), head, requests)
    if b.entry_rows:
        _insert(conn, store.entries, b.entry_rows)
        if b.node_rows:
            _insert(conn, store.nodes, b.node_rows)
        upd = conn.execute(
            ADVANCE_HEAD,
            {
                "locked_size": int(row.size),
                "new_size": b.size,
                "new_chain": b.chain,
                "new_frontier": b.frontier,
                "new_ts": b.ts,
            },
        )
        if upd.rowcount != 1:
            raise AuditUnavailable("the chain head moved while locked")
    return b.results


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``; on PostgreSQL a batch goes through COPY (several times faster).

    COPY runs on the same connection, inside the batch's transaction, so it commits
    or rolls back with everything else; the append-only triggers do not fire on
    INSERT or COPY.
    """
    if conn.dialect.name != "postgresql" or len(rows) < 16:
        conn.execute(INSERTS[table.name], rows)
        return
    cols = [c.name for c in table.columns]
    raw = conn.connection.driver_connection
    stmt = f"COPY {table.name} ({', '.join(cols)}) FROM STDIN"
    with raw.cursor() as cur, cur.copy(stmt) as copy:  # type: ignore[union-attr]
        for r in rows:
            copy.write_row([r[c] for c in cols])


def write_batch(
    engine: Engine, node: str, requests: Sequence[Sequence[Mapping[str, Any]]]
) -> list[list[Appended] | AuditError]:
    """Append every request (a list of entries kept contiguous) in one transaction.

    A request whose entries cannot be sealed gets its own ``EntryInvalid`` and is
    left out; anything the database refuses fails the whole batch.

    On SQLite in WAL mode the batch commits without syncing and the WAL is synced
    after the write turn is given back (``audit.durability``): the entries are on
    disk before this returns, and other writers do not wait for the disk.
    """
    results, wal = commit_batch(engine, node, requests)
    if wal is not None:
        sync_wal(wal)
    return results


def commit_batch(
    engine: Engine, node: str, requests: Sequence[Sequence[Mapping[str, Any]]]
) -> tuple[list[list[Appended] | AuditError], str | None]:
    """``write_batch`` up to its commit: the results and, on SQLite in WAL mode, the WAL
    file that must be synced (``sync_wal``) before anyone may be told of them.

    On SQLite in WAL mode the batch is written on this thread's ``lazy_connection``
    (its commit does not wait for the disk; the caller's ``sync_wal`` does); any
    other store commits durably on a pooled connection."""
    with store.write_lock(engine):
        damage = health_of(engine).damage  # under the turn: no batch slips past a stop
        if damage is not None:
            raise damage
        wal = engine_wal(engine)
        if wal is not None:
            raw = lazy_connection(engine)
            try:
                return _write_sqlite(raw, node, requests), wal
            except AuditUnavailable:
                drop_lazy_connection(engine)  # the next batch opens a fresh one
                raise
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return _write_sqlite(conn.connection.dbapi_connection, node, requests), None
            try:
                results = _write_locked(conn, node, lock_head(conn), requests)
                conn.commit()
            except SQLAlchemyError as exc:
                conn.rollback()
                raise refused(exc) from exc
            except BaseException:
                conn.rollback()
                raise
            return results, None


def refused(exc: BaseException) -> AuditUnavailable:
    return AuditUnavailable(f"the audit store refused the write: {exc.__class__.__name__}")


# The batch in plain SQL (``:name`` parameters), run on the DBAPI connection by the
# SQLite path and, in psycopg's style, by the PostgreSQL loop writer (``audit.pg_loop``).
HEAD_SQL = "SELECT size, chain_hash, frontier FROM audit_head WHERE id = 1"
ENTRY_SQL = (
    "INSERT INTO audit_entries "
    "(seq, ts, event, exchange_id, subject, data, leaf_hash, chain_hash) VALUES "
    "(:seq, :ts, :event, :exchange_id, :subject, :data, :leaf_hash, :chain_hash)"
)
NODE_SQL = "INSERT INTO audit_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"
ADVANCE_SQL = (
    "UPDATE audit_head SET size = :new_size, chain_hash = :new_chain, "
    "frontier = :new_frontier, ts = :new_ts WHERE id = 1 AND size = :locked_size"
)


def _write_sqlite(
    raw: Any, node: str, requests: Sequence[Sequence[Mapping[str, Any]]]
) -> list[list[Appended] | AuditError]:
    """The batch transaction on SQLite, in plain SQL on a DBAPI connection: the same
    statements ``_write_locked`` runs, without SQLAlchemy's per-statement machinery
    (which cost more CPU than SQLite's own work for a small batch)."""
    cur = raw.cursor()
    try:
        cur.execute("BEGIN IMMEDIATE")  # the write lock: nobody moves the head meanwhile
        head = cur.execute(HEAD_SQL).fetchone()
        if head is None:
            raise AuditUnavailable(NO_HEAD)
        locked = int(head[0])
        b = seal_after(node, now_ts(), (locked, bytes(head[1]), bytes(head[2])), requests)
        if b.entry_rows:
            cur.executemany(ENTRY_SQL, b.entry_rows)
            if b.node_rows:
                cur.executemany(NODE_SQL, b.node_rows)
            cur.execute(
                ADVANCE_SQL,
                {
                    "new_size": b.size,
                    "new_chain": b.chain,
                    "new_frontier": b.frontier,
                    "new_ts": b.ts,
                    "locked_size": locked,
                },
            )
            if cur.rowcount != 1:
                raise AuditUnavailable("the chain head moved while locked")
        raw.commit()
        return b.results
    except sqlite3.Error as exc:
        rollback_quietly(raw)
        raise refused(exc) from exc
    except BaseException:
        rollback_quietly(raw)
        raise
    finally:
        cur.close()


def rollback_quietly(raw: Any) -> None:
    # If even this fails, the caller drops the connection and its transaction with it.
    with contextlib.suppress(sqlite3.Error):
        raw.rollback()


def append_in(
    conn: sa.Connection, node: str, entries: Sequence[Mapping[str, Any]]
) -> list[Appended]:
    """Append ``entries`` inside the caller's open transaction, without committing.

    For administrative changes: the change and its audit entries commit together
    or not at all. The caller's transaction holds the chain-head lock until it
    ends, so keep it short; on SQLite it must already hold the write lock (it has
    written) or be able to take it. Refused while the log is known to be damaged.
    """
    damage = health_of(conn.engine).damage
    if damage is not None:
        raise damage
    try:
        result = _write_locked(conn, node, lock_head(conn), [entries])[0]
    except SQLAlchemyError as exc:
        raise refused(exc) from exc
    if isinstance(result, AuditError):
        raise result
    return result
