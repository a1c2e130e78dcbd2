"""Tables of the audit log (SQLAlchemy Core on its own ``MetaData``) and their guards.

- ``audit_entries``: the exact entry bytes with their leaf and chain hashes, plus
  columns copied out of the entry for lookups (exchange, subject, event, time).
- ``audit_head``: one row, the sequencing point. Appenders lock it (``FOR UPDATE`` on
  PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so any number of processes and nodes
  extend one gapless chain. It also holds the tree's compact range, so a batch
  never reads old leaves.
- ``audit_nodes``: every complete interior subtree hash, written as leaves arrive,
  so proofs read O(log n) rows.
- ``audit_checkpoints`` / ``audit_cosignatures``: signed tree heads and witness lines.

Triggers refuse UPDATE, DELETE and TRUNCATE on everything but the head row (and the
head may never shrink), on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows; threads still take turns
    fcntl = None  # type: ignore[assignment]

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "APPEND_ONLY_TABLES",
    "BUSY_TIMEOUT_MS",
    "LOOP_BUSY_TIMEOUT_MS",
    "TurnBusy",
    "checkpoints",
    "cosignatures",
    "create_schema",
    "damage_marker",
    "engine_for",
    "entries",
    "head",
    "metadata",
    "nodes",
    "seed_head",
    "short_busy_wait",
    "sqlite_file",
    "trigger_ddl",
    "watch_busy_timeout",
    "write_lock",
]

metadata = sa.MetaData()

entries = sa.Table(
    "audit_entries",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.String(24), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("exchange_id", sa.String(200), nullable=True),
    sa.Column("subject", sa.String(128), nullable=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("chain_hash", sa.LargeBinary(32), nullable=False),
    sa.Index("ix_audit_entries_exchange", "exchange_id"),
    sa.Index("ix_audit_entries_subject_seq", "subject", "seq"),
    sa.Index("ix_audit_entries_event_seq", "event", "seq"),
    sa.Index("ix_audit_entries_ts", "ts"),
)

head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("chain_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("frontier", sa.LargeBinary, nullable=False),
    sa.Column("ts", sa.String(24), nullable=False),
)

nodes = sa.Table(
    "audit_nodes",
    metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.LargeBinary(32), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("ts", sa.String(24), nullable=False),
)

cosignatures = sa.Table(
    "audit_cosignatures",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("witness", sa.String(200), primary_key=True),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("line", sa.Text, nullable=False),
)

#: One row while the log is known to be damaged: every node stops (``audit.status``).
#: Not append-only, and not evidence: its row goes when a verification passes.
damage_marker = sa.Table(
    "audit_damage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("detected_at", sa.String(40), nullable=False),
)

APPEND_ONLY_TABLES = (
    "audit_entries",
    "audit_nodes",
    "audit_checkpoints",
    "audit_cosignatures",
)

_PG_FUNCTIONS = [
    """CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit table % is append-only (% refused)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$""",
    """CREATE OR REPLACE FUNCTION audit_head_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id <> OLD.id OR NEW.size < OLD.size THEN
    RAISE EXCEPTION 'audit head may only move forward'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$""",
]


def trigger_ddl(dialect: str) -> list[str]:
    """Statements that make the audit tables append-only on ``dialect``."""
    out: list[str] = []
    if dialect == "postgresql":
        out.extend(_PG_FUNCTIONS)
        for t in APPEND_ONLY_TABLES:
            out.append(f"DROP TRIGGER IF EXISTS {t}_no_change ON {t}")
            out.append(
                f"CREATE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t} "
                "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
            )
        for t in (*APPEND_ONLY_TABLES, "audit_head"):
            out.append(f"DROP TRIGGER IF EXISTS {t}_no_truncate ON {t}")
            out.append(
                f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
            )
        out.append("DROP TRIGGER IF EXISTS audit_head_no_delete ON audit_head")
        out.append(
            "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
            "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
        )
        out.append("DROP TRIGGER IF EXISTS audit_head_forward ON audit_head")
        out.append(
            "CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head "
            "FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only()"
        )
    elif dialect == "sqlite":
        for t in APPEND_ONLY_TABLES:
            for op in ("UPDATE", "DELETE"):
                out.append(
                    f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
                    f"BEGIN SELECT RAISE(ABORT, 'audit table {t} is append-only'); END"
                )
        out.append(
            "CREATE TRIGGER IF NOT EXISTS audit_head_no_delete BEFORE DELETE ON audit_head "
            "BEGIN SELECT RAISE(ABORT, 'audit head cannot be deleted'); END"
        )
        out.append(
            "CREATE TRIGGER IF NOT EXISTS audit_head_forward BEFORE UPDATE ON audit_head "
            "WHEN NEW.size < OLD.size OR NEW.id <> OLD.id "
            "BEGIN SELECT RAISE(ABORT, 'audit head may only move forward'); END"
        )
    return out


def seed_head(conn: Connection) -> None:
    """Insert the empty chain head if it is missing (idempotent)."""
    if conn.execute(sa.select(head.c.id).where(head.c.id == 1)).first() is None:
        conn.execute(
            head.insert().values(
                id=1, size=0, chain_hash=b"\x00" * 32, frontier=b"", ts="1970-01-01T00:00:00.000Z"
            )
        )


def create_schema(engine_or_conn: Engine | Connection) -> None:
    """Create tables, append-only triggers and the head row; safe to run twice."""
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.begin() as conn:
            create_schema(conn)
        return
    conn = engine_or_conn
    metadata.create_all(conn, checkfirst=True)
    for stmt in trigger_ddl(conn.dialect.name):
        conn.execute(sa.text(stmt))
    seed_head(conn)


def engine_for(url: str, **kwargs: Any) -> Engine:
    """An engine for the CLI and tests; SQLite gets WAL, FULL sync and a busy timeout."""
    u = sa.make_url(url)
    if u.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(url, **kwargs)
    path = sqlite_file(u.database)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    watch_busy_timeout(engine)
    return engine


def sqlite_file(database: str | None) -> str | None:
    """The file a SQLite URL's database names: a plain path, or the path of a
    ``file:`` URI filename; None for an in-memory database."""
    if not database or database == ":memory:":
        return None
    if not database.startswith("file:"):
        return database
    uri = urlsplit(database)
    if "mode=memory" in uri.query or not uri.path or uri.path == ":memory:":
        return None
    return unquote(uri.path)


class TurnBusy(Exception):
    """The SQLite write turn is held elsewhere, and the caller asked not to wait."""


#: How long SQLite's own busy handler may wait: long for threads and the CLI, short
#: for an event loop (which holds the write turn, so only a writer that ignores
#: the turn can hold SQLite's lock; the loop's write then fails closed instead of
#: stalling everything the loop serves).
BUSY_TIMEOUT_MS, LOOP_BUSY_TIMEOUT_MS = 30_000, 50
_LOOP_WRITES: contextvars.ContextVar[bool] = contextvars.ContextVar("loop_writes", default=False)


@contextlib.contextmanager
def short_busy_wait() -> Iterator[None]:
    """SQLite connections taken from the pool inside this block wait at most
    ``LOOP_BUSY_TIMEOUT_MS`` for SQLite's lock (``watch_busy_timeout`` engines)."""
    token = _LOOP_WRITES.set(True)
    try:
        yield
    finally:
        _LOOP_WRITES.reset(token)


def watch_busy_timeout(engine: Engine) -> None:
    """Give pooled connections checked out under ``short_busy_wait`` the short busy
    timeout, and the long one back when they return to the pool."""

    @sa.event.listens_for(engine, "checkout")
    def _short(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if _LOOP_WRITES.get():
            dbapi_conn.execute(f"PRAGMA busy_timeout={LOOP_BUSY_TIMEOUT_MS}")
            record.info["short_busy"] = True

    @sa.event.listens_for(engine, "checkin")
    def _long(dbapi_conn: Any, record: Any) -> None:
        if record.info.pop("short_busy", False) and dbapi_conn is not None:
            dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class _WriterTurn:
    """One process's turn at a SQLite file: a thread lock, then an ``flock`` on a
    lock file beside the database, so other processes on the same file queue in
    the kernel instead of SQLite's sleeping busy handler. The thread holding the
    turn may take it again (an event loop holds it around a step that writes)."""

    def __init__(self, database: str | None) -> None:
        """``database``: the file's resolved path (every name of it locks one file)."""
        self.threads = threading.RLock()
        self.path = f"{database}-writer.lock" if database and database != ":memory:" else None
        self.fd: int | None = None
        self.depth = 0  # how many times the owning thread holds it

    @contextlib.contextmanager
    def hold(self, wait: bool = True) -> Iterator[None]:
        if not self.threads.acquire(blocking=wait):
            raise TurnBusy("another thread of this process holds the SQLite write turn")
        try:
            self.depth += 1
            if self.depth > 1 or self.path is None or fcntl is None:
                yield
                return
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise TurnBusy("another process holds the SQLite write turn") from exc
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.depth -= 1
            self.threads.release()

    def __del__(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


_SQLITE_WRITERS: weakref.WeakValueDictionary[str, _WriterTurn] = weakref.WeakValueDictionary()
_ENGINE_TURNS: weakref.WeakKeyDictionary[Engine, _WriterTurn] = weakref.WeakKeyDictionary()
_WRITERS_GUARD = threading.Lock()


@contextlib.contextmanager
def write_lock(engine: Engine, *, wait: bool = True) -> Iterator[None]:
    """Hold the SQLite write turn around a write transaction.

    SQLite has one writer. Writers that race for it meet SQLite's busy
    handler, which sleeps in steps of up to 100 ms: the whole tail latency of a
    busy gateway. Taking turns first (threads of this process on a lock, other
    processes on an ``flock`` of ``<database>-writer.lock``) means they never
    do. The thread that holds the turn may take it again: it is per thread, not
    per asyncio task, so never hold it across an ``await``. ``wait=False`` raises
    ``TurnBusy`` instead of waiting (an event loop must not block: it tries again
    later). On PostgreSQL this is a no-op (its row locks queue without sleeping).
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    turn = _ENGINE_TURNS.get(engine)
    if turn is None:
        turn = _turn_of(engine)
    with turn.hold(wait):
        yield


def _turn_of(engine: Engine) -> _WriterTurn:
    """One turn per file, not per Engine: two engines on one file in one process
    must not take two flocks (the second would wait for the first forever)."""
    database = sqlite_file(engine.url.database)
    key = os.path.realpath(database) if database else f"memory:{id(engine)}"
    with _WRITERS_GUARD:
        turn = _ENGINE_TURNS.get(engine)
        if turn is None:
            turn = _SQLITE_WRITERS.get(key)
            if turn is None:
                turn = _SQLITE_WRITERS[key] = _WriterTurn(key if database else None)
            _ENGINE_TURNS[engine] = turn  # the turn (and its fd) lives while an engine does
        return turn
