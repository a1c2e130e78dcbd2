"""``lazy_commit``: the write commits, skips only its own wait for the disk, and
leaves the pooled connection as durable as it found it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from gateway.db import lazy_commit, make_engine

_T = sa.table("lazy_t", sa.column("x", sa.Integer))


def _durability(conn: sa.Connection, sqlite: bool) -> str:
    if sqlite:
        return {0: "off", 1: "normal", 2: "full", 3: "extra"}[
            int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
        ]
    return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def test_commits_lazily_and_restores_the_connection(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1, max_overflow=0)  # every block: one connection
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS lazy_t")
            conn.exec_driver_sql("CREATE TABLE lazy_t (x INTEGER)")
            before = _durability(conn, sqlite)
        with lazy_commit(engine) as conn:
            conn.execute(_T.insert().values(x=1))
            inside = _durability(conn, sqlite)
        with engine.connect() as conn:
            after = _durability(conn, sqlite)
            assert conn.execute(sa.select(sa.func.count()).select_from(_T)).scalar_one() == 1
        assert (before, inside, after) == (
            ("full", "normal", "full") if sqlite else ("on", "off", "on")
        )
    finally:
        engine.dispose()


def test_a_failed_write_rolls_back_and_restores(db_url: str) -> None:
    engine = make_engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS lazy_t")
            conn.exec_driver_sql("CREATE TABLE lazy_t (x INTEGER)")
        with pytest.raises(RuntimeError), lazy_commit(engine) as conn:
            conn.execute(_T.insert().values(x=1))
            raise RuntimeError("the caller failed")
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(_T)).scalar_one() == 0
            assert _durability(conn, sqlite) == ("full" if sqlite else "on")
    finally:
        engine.dispose()
