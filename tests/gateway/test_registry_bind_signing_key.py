"""A key that signed agreements still in force is not bound to a system.

From a review: a key bound to a system signs no agreement (``key_bound_to_system``),
so binding the key a department had signed agreements with left them in force
until their next verification, which then failed: a suspended agreement could not
be reactivated, while exchanges under the others went on. The bind is refused
(409 ``key_signed_agreements``, naming them); the department registers a new key
for its system instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.jose import public_jwk
from gateway.registry.models import SystemCreate
from tests.gateway.conftest import Clock, Parties, make_services, register_parties
from tests.gateway.test_api_admin import assert_problem, bearer

SYSTEM = "population-api"


@pytest.fixture
def http(db_url: str, tmp_path: Path, clock: Clock) -> Iterator[tuple[TestClient, Parties]]:
    """The app on SQLite and PostgreSQL; ``person-lookup@1`` in force, signed with
    ``civil-registry``'s department key, which has a system to be bound to."""
    services = make_services(db_url, tmp_path, clock)
    parties = register_parties(services)
    services.agreements.submit(parties.sign(parties.terms()), actor="test")
    services.registry.add_system("civil-registry", SystemCreate(system_id=SYSTEM), actor="t")
    with TestClient(create_app(services=services)) as client:
        yield client, parties
    services.close()


def _bind(client: TestClient, parties: Parties) -> Any:
    kid = public_jwk(parties.keys["civil-registry"])["kid"]
    return client.post(
        f"/v1/departments/civil-registry/keys/{kid}/bind",
        json={"system": SYSTEM},
        headers=bearer(parties.services, "admin", sub="carol"),
    )


def _key_bound(parties: Parties) -> list[dict[str, Any]]:
    log = parties.services.audit_log
    docs = [e.doc() for e in log.entries(0, log.head().size)]
    return [d for d in docs if d["event"] == "key_change" and d["outcome"] == "key_bound"]


def _system_of_key(parties: Parties) -> str | None:
    kid = public_jwk(parties.keys["civil-registry"])["kid"]
    return parties.services.registry.get_key(kid).system_id


@pytest.mark.parametrize("status", ["active", "suspended"])
def test_key_that_signed_an_agreement_in_force_is_not_bound(
    http: tuple[TestClient, Parties], status: str
) -> None:
    client, parties = http
    agreements = parties.services.agreements
    if status == "suspended":
        agreements.transition("person-lookup", 1, "suspended", actor="t", reason="review")
    body = assert_problem(_bind(client, parties), 409, "key_signed_agreements")
    assert body["agreements"] == ["person-lookup@1"]
    assert "register a new key" in body["detail"].lower()
    assert _system_of_key(parties) is None
    assert _key_bound(parties) == []
    # What the bind would have broken still works.
    if status == "suspended":
        agreements.transition("person-lookup", 1, "active", actor="t", reason="reviewed")
    assert agreements.verify(agreements.get("person-lookup", 1).signed) is not None


def test_key_whose_agreements_are_out_of_force_is_bound(
    http: tuple[TestClient, Parties],
) -> None:
    client, parties = http
    parties.services.agreements.transition("person-lookup", 1, "revoked", actor="t", reason="ended")
    r = _bind(client, parties)
    assert r.status_code == 200, r.text
    assert _system_of_key(parties) == SYSTEM
    assert len(_key_bound(parties)) == 1


def test_key_that_signed_agreements_is_listed_among_the_bind_routes_problems(
    http: tuple[TestClient, Parties],
) -> None:
    client, _parties = http
    route = client.get("/openapi.json").json()["paths"][
        "/v1/departments/{dept_id}/keys/{kid}/bind"
    ]["post"]
    assert "key_signed_agreements" in route["responses"]["409"]["x-problem-codes"]
