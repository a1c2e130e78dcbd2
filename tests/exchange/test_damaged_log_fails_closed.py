"""A damaged audit log, or one that takes no appends, stops the gateway (fail closed).

Over HTTP against running gateways, on SQLite and PostgreSQL: once a verification
finds the log damaged, exchanges are refused with 503 ``audit_log_damaged`` and
nothing more is appended, on every node of the database and across restarts,
until a verification of the repaired log passes; and ``/readyz`` is 503 while the
store refuses appends, and 200 again once it takes them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from audit import engine_for
from examples.launch import Departments
from gateway.client import AccordClient, Unavailable
from tests._support.gateway import Gateway, running_gateway, start_gateway, stop
from tests._support.servers import fresh_database
from tests.exchange.conftest import STORES, gateway_on_store, subject_with

REQUEST = {
    "agreement": "welfare-person-lookup",
    "dataset": "person",
    "purpose": "benefit-eligibility",
}
QUERY = {"kind": "record", "subject": subject_with("civil")}


@contextlib.contextmanager
def _store(gw: Gateway) -> Iterator[sa.Engine]:
    engine = engine_for(gw.env["ACCORD_DATABASE_URL"])
    try:
        yield engine
    finally:
        engine.dispose()


def _head(gw: Gateway) -> tuple[int, bytes]:
    with _store(gw) as engine, engine.connect() as conn:
        row = conn.execute(sa.text("SELECT size, chain_hash FROM audit_head WHERE id = 1")).one()
        return int(row[0]), bytes(row[1])


def _set_head_chain(gw: Gateway, chain: bytes) -> None:
    with _store(gw) as engine, engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_head SET chain_hash = :c WHERE id = 1"), {"c": chain})


def _status(url: str, gw: Gateway) -> dict[str, object]:
    r = httpx.get(url + "/v1/audit/status?refresh=true", headers=gw.staff("auditor"), timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def _ready(url: str) -> httpx.Response:
    return httpx.get(url + "/readyz", timeout=30)


def _refused_as_damaged(client: AccordClient) -> None:
    with pytest.raises(Unavailable) as err:
        client.exchange(**REQUEST, query=QUERY)
    assert err.value.status == 503
    assert err.value.code == "audit_log_damaged"
    assert err.value.problem["type"] == "urn:accord:problem:audit_log_damaged"
    assert err.value.problem.get("exchange_id")
    assert "result" not in err.value.problem and "records" not in err.value.problem


def _until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.2)


@pytest.fixture(params=STORES)
def gw(
    request: pytest.FixtureRequest, departments: Departments, tmp_path: Path
) -> Iterator[Gateway]:
    with gateway_on_store(request, departments, tmp_path) as g:
        yield g


def test_damaged_log_releases_nothing_until_a_verification_passes(gw: Gateway) -> None:
    client = gw.client("welfare-office")
    assert client.exchange(**REQUEST, query=QUERY).records
    _, chain = _head(gw)
    _set_head_chain(gw, bytes(32))  # the head no longer matches the chain it heads
    assert _status(gw.url, gw)["state"] == "damaged"
    size = _head(gw)[0]

    _refused_as_damaged(client)
    _refused_as_damaged(client)
    assert _head(gw)[0] == size  # nothing, not even the refusals, chained onto the damage
    ready = _ready(gw.url)
    assert ready.status_code == 503
    assert ready.json()["checks"]["audit_log"].startswith("error: audit_log_damaged")

    # A restart does not clear it: the damage is still there.
    stop(gw.process)
    gw.url, gw.process = start_gateway(gw.env, gw.data_dir)
    client = gw.client("welfare-office")
    _refused_as_damaged(client)
    assert _ready(gw.url).status_code == 503

    # Repair alone does not either: a verification of the repaired log must pass.
    _set_head_chain(gw, chain)
    _refused_as_damaged(client)
    status = _status(gw.url, gw)
    assert status["state"] == "verified" and status["appending"] == "ok"
    assert _ready(gw.url).status_code == 200
    answer = client.exchange(**REQUEST, query=QUERY)
    assert answer.records
    assert _head(gw)[0] > size


def test_damage_found_by_one_node_stops_the_other(
    departments: Departments, tmp_path: Path, pg_server_url: str
) -> None:
    """Two gateway processes on one PostgreSQL: one verifies and finds the damage,
    the other refuses too, without verifying anything itself."""
    with running_gateway(
        db_url=fresh_database(pg_server_url), data_dir=tmp_path, departments_env=departments.env
    ) as a:
        b_url, b_proc = start_gateway(a.env, a.data_dir)
        try:
            b = AccordClient(
                b_url,
                department="welfare-office",
                system="benefits-app",
                key=a.key("welfare-office"),
            )
            assert b.exchange(**REQUEST, query=QUERY).records
            _set_head_chain(a, bytes(32))
            assert _status(a.url, a)["state"] == "damaged"
            _until(
                lambda: _ready(b_url).status_code == 503,
                "the other node never learnt of the damage",
            )
            assert (
                _ready(b_url).json()["checks"]["audit_log"].startswith("error: audit_log_damaged")
            )
            _refused_as_damaged(b)
            b.close()
        finally:
            stop(b_proc)


_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER test_refuse_append BEFORE INSERT ON audit_entries "
        "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION test_refuse_append() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$",
        "CREATE TRIGGER test_refuse_append BEFORE INSERT ON audit_entries "
        "FOR EACH ROW EXECUTE FUNCTION test_refuse_append()",
    ],
}


def test_readiness_is_503_while_appends_fail_and_recovers(gw: Gateway) -> None:
    client = gw.client("welfare-office")
    assert client.exchange(**REQUEST, query=QUERY).records
    assert _ready(gw.url).status_code == 200
    with _store(gw) as engine:
        dialect = engine.dialect.name
        with engine.begin() as conn:
            for stmt in _REFUSE[dialect]:
                conn.exec_driver_sql(stmt)
        try:
            with pytest.raises(Unavailable) as err:
                client.exchange(**REQUEST, query=QUERY)
            assert err.value.code == "audit_unavailable"
            # At once where the failed append is seen (SQLite's writer); on PostgreSQL's
            # loop writer, at the next write probe, at most a second later.
            _until(lambda: _ready(gw.url).status_code == 503, "readiness stayed 200", 5.0)
            ready = _ready(gw.url)
            assert ready.status_code == 503
            assert ready.json()["checks"]["audit_log"].startswith("error: audit_unavailable")
            time.sleep(1.2)  # past the probe's interval: still refused, still unready
            assert _ready(gw.url).status_code == 503
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "DROP TRIGGER test_refuse_append"
                    + (" ON audit_entries" if dialect == "postgresql" else "")
                )
    # No exchange arrives at an unready node: readiness recovers by itself.
    _until(lambda: _ready(gw.url).status_code == 200, "readiness never recovered")
    assert _ready(gw.url).json()["checks"]["audit_log"] == "ok"
    assert client.exchange(**REQUEST, query=QUERY).records
