"""The gateway's own PostgreSQL stops taking connections: exchanges fail closed with 503."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from examples.launch import Departments
from gateway.client import Unavailable
from tests._support.gateway import running_gateway
from tests._support.servers import allow_connections, fresh_database
from tests.exchange.conftest import subject_with

REQUEST = {
    "agreement": "welfare-person-lookup",
    "dataset": "person",
    "purpose": "benefit-eligibility",
}


def test_store_outage_answers_503_and_releases_nothing(
    departments: Departments, tmp_path: Path, pg_server_url: str
) -> None:
    db_url = fresh_database(pg_server_url)
    with running_gateway(db_url=db_url, data_dir=tmp_path, departments_env=departments.env) as gw:
        client = gw.client("welfare-office")
        query = {"kind": "record", "subject": subject_with("civil")}
        earlier = client.exchange(**REQUEST, query=query)
        assert earlier.records
        allow_connections(pg_server_url, db_url, False)
        try:
            with pytest.raises(Unavailable) as err:
                client.exchange(**REQUEST, query=query)
            assert err.value.code == "store_unavailable"
            assert "records" not in err.value.problem
            # the other exchange routes fail the same way, not with a bare 500
            with pytest.raises(Unavailable) as err:
                client.receipt(earlier.exchange_id)
            assert err.value.code == "store_unavailable"
            assert httpx.get(gw.url + "/readyz").status_code == 503
        finally:
            allow_connections(pg_server_url, db_url, True)
        assert client.exchange(**REQUEST, query=query).records  # back once the store is


def test_a_pulled_audit_wal_stops_releases(departments: Departments, tmp_path: Path) -> None:
    """SQLite: once the log's write-ahead file is gone from under a running gateway,
    nothing more is released: each exchange is a 503, from whichever part of the
    store meets the damage first (the audit sync, or the claim on a new connection).
    The appender's stop and readiness are tested in process (tests/gateway)."""
    db = tmp_path / "accord.db"
    with running_gateway(
        db_url=f"sqlite:///{db}", data_dir=tmp_path, departments_env=departments.env
    ) as gw:
        client = gw.client("welfare-office")
        query = {"kind": "record", "subject": subject_with("civil")}
        assert client.exchange(**REQUEST, query=query).records
        Path(f"{db}-wal").unlink()  # the open file lives on; its name, and so its sync, do not
        for _ in range(3):
            with pytest.raises(Unavailable) as err:
                client.exchange(**REQUEST, query=query)
            assert err.value.code in {"audit_unavailable", "store_unavailable"}
            assert "records" not in err.value.problem
