"""Database engines and sessions (SQLModel on SQLAlchemy 2).

SQLite in WAL mode is the zero-setup default; PostgreSQL is chosen with
``ACCORD_DATABASE_URL=postgresql+psycopg://...``. Engines are built by the app
factory or the CLI, never at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlmodel import Session, create_engine

from audit.durability import drop_lazy_connection, lazy_connection
from audit.store import BUSY_TIMEOUT_MS, sqlite_file, watch_busy_timeout, write_lock

log = structlog.get_logger(__name__)

__all__ = [
    "WalCheckpointer",
    "is_sqlite",
    "lazy_commit",
    "make_engine",
    "raw_lazy_transaction",
    "session_scope",
    "single_statement_cursor",
    "upgrade",
]


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


#: WAL pages (4 KiB) after which a committing writer checkpoints by itself.
_AUTOCHECKPOINT_PAGES = 10_000


class WalCheckpointer:
    """Copies SQLite's write-ahead log into the database from a background thread.

    With SQLite's default, the commit that pushes the WAL past 1,000 pages copies
    them back and syncs the database file while it holds the write turn: every
    other writer waits tens of milliseconds, which is most of a busy gateway's
    tail latency. A PASSIVE checkpoint every ``interval_s`` takes no write lock
    and never blocks writers; the WAL restarts from its beginning once a
    checkpoint has copied all of it. A no-op on PostgreSQL.
    """

    def __init__(self, engine: Engine, *, interval_s: float = 1.0) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not is_sqlite(self.engine) or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def checkpoint(self) -> None:
        with self.engine.connect() as conn:
            _pragma(conn, "wal_checkpoint(PASSIVE)")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.checkpoint()
            except Exception as exc:  # the next round tries again; commits still checkpoint
                log.warning("wal_checkpoint_failed", error=str(exc))


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if is_sqlite(url):
        db_path = sqlite_file(make_url(url).database)
        if db_path:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # A running gateway checkpoints from its own thread (WalCheckpointer), so
            # no writer pays for a checkpoint inside its commit; this bound only
            # matters for processes that run none (the CLI, tests).
            cur.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            cur.close()

        watch_busy_timeout(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


@contextmanager
def lazy_commit(engine: Engine) -> Iterator[Connection]:
    """A write transaction whose commit does not wait for the disk by itself.

    Only for writes that a durable commit on the same database always follows
    before anyone relies on them, or whose loss in a power cut costs nothing
    (the decision log kept for dry-runs, a quota reservation given back). The
    exchange's jti claim and quota counters are
    such writes: every answer, allowed or refused, waits for its audit entry's
    commit, and that commit makes everything written before it durable too
    (SQLite WAL: its fsync covers the whole shared log file; PostgreSQL: a
    synchronous commit flushes the WAL up to and including itself). A power cut
    can then only lose claims of requests that never got an answer, which a
    client may send again anyway. Saves one fsync per exchange.
    """
    sqlite = is_sqlite(engine)
    with engine.connect() as conn:
        if sqlite:
            _pragma(conn, "synchronous=NORMAL")
        try:
            with conn.begin():
                if not sqlite:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn
        finally:
            if sqlite:
                _pragma(conn, "synchronous=FULL")


@contextmanager
def raw_lazy_transaction(engine: Engine) -> Iterator[Any]:
    """``lazy_commit`` on SQLite's DBAPI connection, for the hottest writes.

    Yields a DBAPI cursor (qmark parameters) in one transaction that commits
    without waiting for the disk (``synchronous=NORMAL``), for the same reasons
    and under the same rule as ``lazy_commit``, on this thread's connection kept
    for such writes (``audit.durability.lazy_connection``; hold the write turn).
    Raises the driver's own exceptions; after one the connection is dropped.
    (PostgreSQL writes of this kind are single statements: ``single_statement_cursor``.)
    """
    if not is_sqlite(engine):
        raise ValueError("raw_lazy_transaction is for SQLite")
    raw = lazy_connection(engine)
    try:
        cur = raw.cursor()
        try:
            yield cur
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            cur.close()
    except engine.dialect.loaded_dbapi.Error:
        drop_lazy_connection(engine)  # whatever state it is in, the next write starts afresh
        raise


@contextmanager
def single_statement_cursor(engine: Engine) -> Iterator[Any]:
    """A DBAPI cursor for statements that are each a whole transaction by themselves.

    On PostgreSQL the pooled connection runs in autocommit for the duration: a
    read or a self-contained write is one round trip instead of BEGIN, the
    statement and COMMIT or ROLLBACK. The connection goes back to the pool
    transactional (or is dropped from it). SQLite commits nothing implicitly here:
    use it for reads there. Raises the driver's own exceptions.
    """
    raw = engine.raw_connection()
    driver: Any = raw.driver_connection
    autocommit = engine.dialect.name == "postgresql"
    try:
        if autocommit:
            driver.autocommit = True
        cur = raw.cursor()
        try:
            yield cur
        finally:
            cur.close()
            if autocommit:
                try:
                    driver.autocommit = False
                except Exception:
                    raw.invalidate()  # never pool a connection left autocommitting
                    raise
    finally:
        raw.close()


def _pragma(conn: Connection, setting: str) -> None:
    """Run a PRAGMA on the DBAPI connection, outside SQLAlchemy's transaction tracking."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA {setting}")
    finally:
        cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error.

    On SQLite it holds the write turn (``audit.store.write_lock``) throughout, as
    every writer of the file does: the event loop's writers take the turn without
    waiting and must never meet SQLite's own lock held by someone outside it,
    which would put the whole loop to sleep in SQLite's busy handler.
    """
    with write_lock(engine), Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


#: PostgreSQL advisory lock key that serialises migrations ("accord-db" as an int64).
MIGRATION_LOCK = int.from_bytes(b"accord-db", "big") & 0x7FFF_FFFF_FFFF_FFFF


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations against ``engine`` (``accord db upgrade``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with write_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Nodes of a new deployment start together and each migrates: the lock
            # lasts until this transaction ends, so the others then find it done.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
