"""The gateway's database goes away: every route answers 503 ``store_unavailable``.

Only the exchange, receipt and access-log routes used to: the directory, the
department JWKS other departments poll, agreements, the audit checkpoint, the
active policy and the admin writes answered 500 ``internal_error``, an incident
code that says "bug, do not retry". A genuine bug the database reports (bad SQL,
a constraint) still is a 500.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from gateway.api.app import create_app
from gateway.api.problems import is_store_outage
from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.settings import Settings
from tests._support.gateway import running_gateway, seeded_services, serving_in_thread
from tests._support.servers import allow_connections, fresh_database

#: What an operator's review found answering 500 (method, path, role).
ROUTES = [
    ("GET", "/v1/departments", "admin"),
    ("GET", "/v1/departments/welfare-office", "admin"),
    ("GET", "/v1/departments/welfare-office/jwks.json", "admin"),
    ("GET", "/v1/agreements", "auditor"),
    ("GET", "/v1/audit/checkpoint", "auditor"),
    ("GET", "/v1/policies/active", "officer"),
    ("POST", "/v1/departments", "admin"),
]
NEW_DEPARTMENT = {"id": "outage-dept", "name": "Outage", "clearance": "internal"}


def _headers(data_dir: Path, role: str) -> dict[str, str]:
    key = dev_issuer_key(data_dir / "keys")
    token = issue_dev_token(key, subject="operator", roles=[role], audience="accord")
    return {"Authorization": f"Bearer {token}"}


def _answers(url: str, data_dir: Path) -> dict[str, tuple[int, Any]]:
    out: dict[str, tuple[int, Any]] = {}
    for method, path, role in ROUTES:  # a connection each: a 500 used to close its own
        body = NEW_DEPARTMENT if method == "POST" else None
        r = httpx.request(method, url + path, json=body, headers=_headers(data_dir, role))
        problem = r.headers.get("content-type", "").startswith("application/problem+json")
        out[f"{method} {path}"] = (r.status_code, r.json().get("code") if problem else None)
    out["GET /readyz"] = (httpx.get(url + "/readyz").status_code, None)
    return out


def _all_unavailable(answers: dict[str, tuple[int, Any]]) -> None:
    expected: dict[str, tuple[int, Any]] = {r: (503, "store_unavailable") for r in answers}
    expected["GET /readyz"] = (503, None)
    assert answers == expected


def test_postgres_refusing_connections_is_503_on_every_route_not_500(
    tmp_path: Path, pg_server_url: str
) -> None:
    db_url = fresh_database(pg_server_url)
    with running_gateway(db_url=db_url, data_dir=tmp_path, departments_env={}) as gw:
        before = _answers(gw.url, tmp_path)
        assert before["GET /v1/departments"] == (200, None)
        assert before["POST /v1/departments"][0] < 300
        allow_connections(pg_server_url, db_url, False)
        try:
            _all_unavailable(_answers(gw.url, tmp_path))
        finally:
            allow_connections(pg_server_url, db_url, True)
        assert _answers(gw.url, tmp_path)["GET /v1/departments"] == (200, None)


@pytest.fixture
def sqlite_gateway(tmp_path: Path) -> Iterator[tuple[str, Any, Path]]:
    db = tmp_path / "accord.db"
    services = seeded_services(f"sqlite:///{db}", tmp_path)
    try:
        with serving_in_thread(services) as url:
            yield url, services, db
    finally:
        services.close()
        services.engine.dispose()


def test_sqlite_file_gone_is_503_on_every_route_not_500(
    sqlite_gateway: tuple[str, Any, Path], tmp_path: Path
) -> None:
    """The volume holding the file is gone: a fresh connection cannot open it."""
    url, services, db = sqlite_gateway
    assert _answers(url, tmp_path)["GET /v1/departments"] == (200, None)
    moved = tmp_path / "moved"
    moved.mkdir()
    for part in tmp_path.glob("accord.db*"):
        shutil.move(part, moved / part.name)
    db.mkdir()  # a directory where the file was: "unable to open database file"
    services.engine.dispose()  # the pool's open files would keep working
    services.audit_log.engine.dispose()
    _all_unavailable(_answers(url, tmp_path))


def test_every_route_on_the_store_documents_store_unavailable(tmp_path: Path) -> None:
    settings = Settings(dev_mode=True, data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/a.db")
    spec = create_app(settings).openapi()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        if path.startswith("/v1/")
        for method, operation in operations.items()
        if "store_unavailable"
        not in operation["responses"].get("503", {}).get("x-problem-codes", [])
    ]
    assert missing == []


# -- the classification, on errors the real drivers raise ------------------------


def _raised(engine: sa.Engine, sql: str) -> sa.exc.SQLAlchemyError:
    with pytest.raises(sa.exc.SQLAlchemyError) as caught, engine.connect() as conn:
        conn.exec_driver_sql(sql)
    return caught.value


def test_an_unopenable_or_locked_sqlite_file_is_an_outage(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    assert is_store_outage(_raised(sa.create_engine(f"sqlite:///{tmp_path / 'dir.db'}"), "x"))
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        waiting = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
        locked = _raised(waiting, "INSERT INTO t VALUES (1)")
        assert "locked" in str(locked) and is_store_outage(locked)
    finally:
        holder.close()


def test_a_query_bug_on_sqlite_is_not_an_outage(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ok.db'}")
    assert not is_store_outage(_raised(engine, "SELECT * FROM no_such_table"))
    assert not is_store_outage(_raised(engine, "SELEKT 1"))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE u (x INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO u VALUES (1)")
    assert not is_store_outage(_raised(engine, "INSERT INTO u VALUES (1)"))  # IntegrityError


def test_a_refused_postgres_connection_is_an_outage_and_a_bug_is_not(pg_url: str) -> None:
    closed = sa.make_url(pg_url).set(port=1)
    refused = _raised(sa.create_engine(closed), "SELECT 1")
    assert isinstance(refused, sa.exc.OperationalError)
    assert isinstance(refused.orig, psycopg.OperationalError)
    assert is_store_outage(refused)
    engine = sa.create_engine(pg_url)
    try:
        assert not is_store_outage(_raised(engine, "SELECT * FROM no_such_table"))
        assert not is_store_outage(_raised(engine, "SELECT 1/0"))
        lost = _raised(engine, "SELECT pg_terminate_backend(pg_backend_pid())")
        assert is_store_outage(lost)
    finally:
        engine.dispose()
