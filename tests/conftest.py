"""Fixtures shared by every suite: real PostgreSQL, SQLite, the real OPA server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.servers import PostgresCluster, fresh_database, opa_server


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server database we may create databases from."""
    env = os.environ.get("ACCORD_TEST_PG_URL")
    if env:
        yield env
        return
    cluster = PostgresCluster()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_server_url: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return fresh_database(pg_server_url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'accord.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'accord.db'}"
    server: str = request.getfixturevalue("pg_server_url")
    return fresh_database(server)


@pytest.fixture(scope="session")
def opa_url() -> Iterator[str]:
    """Base URL of a real OPA server started for this test session."""
    with opa_server() as url:
        yield url
