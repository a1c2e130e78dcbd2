"""An agreement past its window reads as expired everywhere, and its expiry is
recorded once (lifecycle event and audit entry) by the gateway itself.

The acceptance review saw ``GET /v1/agreements/{id}`` answer ``active`` after
``valid_until`` while ``accord agreement list`` said ``expired``, and nothing
ever recorded the expiry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.agreements.service import AgreementService
from gateway.agreements.terms import AgreementTerms
from gateway.api.app import create_app
from gateway.services import Services
from tests.gateway.conftest import Clock, Parties, make_services, register_parties
from tests.gateway.test_api_admin import bearer

AGREEMENT = "/v1/agreements/person-lookup"


@pytest.fixture
def setup(db_url: str, tmp_path: Path, clock: Clock) -> Iterator[tuple[Services, Parties]]:
    """Services on SQLite and PostgreSQL with one active agreement, the app not started."""
    services = make_services(db_url, tmp_path, clock)
    parties = register_parties(services)
    services.agreements.submit(parties.sign(parties.terms()), actor="t")
    yield services, parties
    services.close()


def _valid_until(services: Services) -> Any:
    return AgreementTerms(services.agreements.get("person-lookup", 1).terms).valid_until


def _expiry_entries(services: Services) -> list[dict[str, Any]]:
    size = services.audit_log.head().size
    docs = [e.doc() for e in services.audit_log.entries(0, size)]
    return [d for d in docs if d["event"] == "agreement_change" and d["outcome"] == "expired"]


def _statuses(client: TestClient, services: Services) -> list[str]:
    auditor = bearer(services, "auditor", sub="bob")
    latest = client.get(AGREEMENT, headers=auditor).json()
    version = client.get(f"{AGREEMENT}/versions/1", headers=auditor).json()
    listed = client.get("/v1/agreements", headers=auditor).json()
    return [latest["status"], version["status"], *(a["status"] for a in listed)]


def test_api_shows_an_agreement_past_its_window_as_expired(
    setup: tuple[Services, Parties], clock: Clock
) -> None:
    services, _ = setup
    with TestClient(create_app(services=services)) as client:
        assert _statuses(client, services) == ["active"] * 3
        clock.now = _valid_until(services)  # the first instant out of force
        assert _statuses(client, services) == ["expired"] * 3
    # The watch has not run since: the view is computed, as the CLI lists it.
    stored = services.agreements.get("person-lookup", 1)
    assert stored.status == "active"
    assert services.agreements.status_at(stored, clock()) == "expired"


def test_api_shows_an_agreement_before_its_window_as_not_yet_valid(
    sqlite_services: Services, clock: Clock
) -> None:
    parties = register_parties(sqlite_services)
    terms = parties.terms(valid_from="2026-07-01T00:00:00Z")
    sqlite_services.agreements.submit(parties.sign(terms), actor="t")
    with TestClient(create_app(services=sqlite_services)) as client:
        admin = bearer(sqlite_services, "admin")
        assert client.get(AGREEMENT, headers=admin).json()["status"] == "not_yet_valid"
        clock.now = AgreementTerms(terms).valid_from
        assert client.get(AGREEMENT, headers=admin).json()["status"] == "active"


def test_gateway_records_an_expiry_that_happened_while_it_was_down(
    setup: tuple[Services, Parties], clock: Clock
) -> None:
    services, _ = setup
    clock.now = _valid_until(services)
    with TestClient(create_app(services=services)) as client:
        events = client.get(
            f"{AGREEMENT}/versions/1/events", headers=bearer(services, "auditor")
        ).json()
    assert [e["to_status"] for e in events] == ["active", "expired"]
    assert events[1]["from_status"] == "active"
    assert events[1]["actor"] == "system:clock"
    assert services.agreements.get("person-lookup", 1).status == "expired"
    [entry] = _expiry_entries(services)
    assert entry["agreement"] == "person-lookup@1"
    assert entry["detail"]["from_status"] == "active"


def test_running_gateway_records_an_expiry_soon_after_it_happens(
    sqlite_services: Services, clock: Clock
) -> None:
    parties = register_parties(sqlite_services)
    sqlite_services.agreements.submit(parties.sign(parties.terms()), actor="t")
    sqlite_services.expiry_interval_s = 0.05
    with TestClient(create_app(services=sqlite_services)):
        assert sqlite_services.agreements.get("person-lookup", 1).status == "active"
        clock.now = _valid_until(sqlite_services)
        deadline = time.monotonic() + 30
        while sqlite_services.agreements.get("person-lookup", 1).status != "expired":
            assert time.monotonic() < deadline, "the expiry was never recorded"
            time.sleep(0.02)
        time.sleep(0.2)  # several more ticks: none records it again
    events = sqlite_services.agreements.events("person-lookup", 1)
    assert [e.to_status for e in events] == ["active", "expired"]
    assert len(_expiry_entries(sqlite_services)) == 1


def _node(services: Services, clock: Clock) -> AgreementService:
    """Another gateway node: its own engine on the same database."""
    from gateway.db import make_engine

    engine = make_engine(services.settings.resolved_database_url)
    return AgreementService(engine, services.registry, audit=services.audit_log, clock=clock)


def test_two_nodes_never_record_the_same_expiry_twice(
    setup: tuple[Services, Parties], clock: Clock
) -> None:
    services, _ = setup
    clock.now = _valid_until(services)
    nodes = [services.agreements, *(_node(services, clock) for _ in range(3))]
    start = threading.Barrier(len(nodes))
    recorded: list[int] = []

    def run(node: AgreementService) -> None:
        start.wait()
        recorded.append(node.expire_due())

    threads = [threading.Thread(target=run, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(recorded) == [0, 0, 0, 1]
    assert [e.to_status for e in services.agreements.events("person-lookup", 1)] == [
        "active",
        "expired",
    ]
    assert len(_expiry_entries(services)) == 1
    for node in nodes[1:]:
        node.engine.dispose()


def test_a_node_that_saw_the_agreement_due_after_another_recorded_it_records_nothing(
    setup: tuple[Services, Parties], clock: Clock
) -> None:
    """The race the conditional update closes: node B found the row due, node A
    recorded the expiry first, then B claims it."""
    services, _ = setup
    clock.now = _valid_until(services)
    row = services.agreements.get("person-lookup", 1)
    assert row.pk is not None
    assert services.agreements.expire_due() == 1
    assert services.agreements._expire(row.pk, "system:clock", clock()) is False
    assert services.agreements.expire_due() == 0
    assert len(services.agreements.events("person-lookup", 1)) == 2
    assert len(_expiry_entries(services)) == 1


def test_an_expiry_is_not_recorded_over_a_suspension(
    setup: tuple[Services, Parties], clock: Clock
) -> None:
    services, _ = setup
    services.agreements.transition(
        "person-lookup", 1, "suspended", actor="officer", reason="investigation"
    )
    clock.now = _valid_until(services)
    assert services.agreements.expire_due() == 0
    assert services.agreements.get("person-lookup", 1).status == "suspended"
    assert _expiry_entries(services) == []
