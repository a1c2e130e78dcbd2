"""Make a SQLite batch durable after its write turn, not inside it.

With ``synchronous=FULL`` a SQLite commit in WAL mode writes its frames and then
syncs the WAL file, all while it holds the database's single write lock. Every
other writer (the exchange's jti claims and quota counters, the next batch)
waits behind that sync, and a slow disk's sync is the whole tail latency of a
busy gateway.

So the appender commits its batch with ``synchronous=NORMAL`` (frames written,
not synced), gives the write turn back, and only then syncs the WAL file itself;
the callers' futures resolve after that sync. The entries are on disk before
anyone is told they are, as before; what changed is that nobody else waits for
the disk meanwhile. A WAL that a checkpoint has copied into the database and
reset was synced by that checkpoint (SQLite syncs the WAL before a checkpoint and
the database after it), so syncing whatever file holds the name now is enough.

Anything that is not a SQLite file in WAL mode (PostgreSQL, ``:memory:``, another
journal mode) keeps committing durably inside its transaction: ``wal_file``
answers None for it.

Writes of this kind run on a connection kept for them (``lazy_connection``): one
per thread and database, out of the pool and always at ``synchronous=NORMAL``.
Switching a pooled connection to ``NORMAL`` and back cost two statements and a
pool checkout per transaction, more CPU than a one-entry batch's own SQL, and a
thread that always writes through the same connection keeps that connection's
page cache (SQLite empties a connection's cache whenever another one has written).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from audit.errors import AuditUnavailable

__all__ = [
    "drop_lazy_connection",
    "engine_wal",
    "lazy_connection",
    "sync_wal",
    "wal_file",
]

_WAL: weakref.WeakKeyDictionary[Engine, str | None] = weakref.WeakKeyDictionary()
_SYNCED: dict[str, tuple[int, int]] = {}  # WAL path -> (device, inode) last synced
_GUARD = threading.Lock()
_LAZY = threading.local()  # .conns: WeakKeyDictionary[Engine, pooled connection, detached]


def _raw(conn: Connection | Any, sql: str) -> list[Any]:
    """Run ``sql`` on the DBAPI connection (of ``conn``), outside SQLAlchemy's
    transaction tracking; raises ``AuditUnavailable`` (not the driver's error)
    when SQLite refuses."""
    dbapi: Any = conn.connection.dbapi_connection if isinstance(conn, Connection) else conn
    try:
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql)
            return list(cursor.fetchall())
        finally:
            cursor.close()
    except Exception as exc:
        raise AuditUnavailable(f"the audit store refused {sql!r}: {exc}") from exc


def wal_file(engine: Engine, conn: Connection) -> str | None:
    """The ``-wal`` file of ``engine``'s SQLite database when it runs in WAL mode, else None.

    The path is the one SQLite itself opened (``PRAGMA database_list``), so URI
    filenames and relative paths resolve to the file that is really written.
    """
    with _GUARD:
        if engine in _WAL:
            return _WAL[engine]
    path: str | None = None
    if engine.dialect.name == "sqlite":
        mode = _raw(conn, "PRAGMA journal_mode")
        main = [row[2] for row in _raw(conn, "PRAGMA database_list") if row[1] == "main"]
        if mode and str(mode[0][0]).lower() == "wal" and main and main[0]:
            path = f"{os.path.abspath(main[0])}-wal"
    with _GUARD:
        _WAL[engine] = path
    return path


def lazy_connection(engine: Engine) -> Any:
    """This thread's own DBAPI connection to ``engine``'s SQLite file, committing
    without waiting for the disk (``synchronous=NORMAL``).

    Only for a write transaction held in the write turn (``store.write_lock``)
    whose commit a ``sync_wal`` of the same file follows before anyone is told of
    it, or whose loss in a power cut costs nothing. It is never pooled, so no
    other code can commit lazily on it by mistake; ``drop_lazy_connection`` after
    a driver error so the next write opens a fresh one.
    """
    conns = getattr(_LAZY, "conns", None)
    if conns is None:
        conns = _LAZY.conns = weakref.WeakKeyDictionary()
    held = conns.get(engine)
    if held is None:
        held = engine.raw_connection()
        held.detach()  # closing it closes the DBAPI connection; it never goes back
        try:
            _raw(held.dbapi_connection, "PRAGMA synchronous=NORMAL")
        except BaseException:
            held.close()
            raise
        conns[engine] = held
    return held.dbapi_connection


def drop_lazy_connection(engine: Engine) -> None:
    """Close this thread's ``lazy_connection`` to ``engine``, if it has one."""
    conns = getattr(_LAZY, "conns", None)
    held = conns.pop(engine, None) if conns is not None else None
    if held is not None:
        with contextlib.suppress(Exception):  # already broken: closing is all that is left
            held.close()


def engine_wal(engine: Engine) -> str | None:
    """``wal_file`` for ``engine``, connecting only the first time it is asked."""
    with _GUARD:
        if engine in _WAL:
            return _WAL[engine]
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as conn:
        return wal_file(engine, conn)


def sync_wal(path: str) -> None:
    """Sync the WAL file at ``path`` to disk; raises ``AuditUnavailable`` if that fails.

    The first time a WAL file (by inode) is synced, its directory is synced too, so
    the file's name survives a power cut as well as its contents. A missing WAL is
    a failure too: the writer's own pooled connection keeps it open, so it cannot
    have been checkpointed away, and syncing nothing must not pass for durable.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise AuditUnavailable(f"cannot open the audit WAL to sync it: {exc}") from exc
    try:
        st = os.fstat(fd)
        os.fdatasync(fd)
        ident = (st.st_dev, st.st_ino)
        if _SYNCED.get(path) != ident:
            _sync_directory(Path(path).parent)
            _SYNCED[path] = ident
    except OSError as exc:
        raise AuditUnavailable(f"the audit WAL could not be synced: {exc}") from exc
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
