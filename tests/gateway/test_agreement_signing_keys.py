"""A key bound to a department's system signs that system's requests, never agreements.

From a security review: a key registered for one system (a citizen portal's,
held by whoever runs the portal) verified as the department's signature on a
sharing agreement, so a system's operator could put an agreement in force in the
department's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from gateway.agreements.models import Agreement
from gateway.agreements.signing import sign_agreement
from gateway.agreements.terms import AgreementTerms
from gateway.api.app import create_app
from gateway.errors import SignatureError
from gateway.jose import PrivateKey, generate_private_key, public_jwk
from gateway.registry.models import KeyCreate, SystemCreate
from tests.gateway.conftest import T0, Clock, Parties, make_services, register_parties
from tests.gateway.test_api_admin import assert_problem, bearer

NOT_BEFORE = T0.replace(year=2025)


def _system_key(parties: Parties, dept: str = "civil-registry") -> PrivateKey:
    """A new key of ``dept`` bound to its system ``population-api``."""
    registry = parties.services.registry
    registry.add_system(dept, SystemCreate(system_id="population-api"), actor="test")
    key = generate_private_key()
    registry.add_key(
        dept,
        KeyCreate(jwk=public_jwk(key), system="population-api", not_before=NOT_BEFORE),
        actor="test",
    )
    return key


def _signed(parties: Parties, provider_key: PrivateKey) -> dict[str, Any]:
    """The default terms signed by ``provider_key`` for the provider and by the
    consumer's department key."""
    now = parties.services.agreements.clock()
    terms = AgreementTerms.from_json(parties.terms())
    jws = sign_agreement(
        {"payload": "", "signatures": []}, provider_key, party="provider", terms=terms, now=now
    )
    jws = sign_agreement(jws, parties.keys["welfare-office"], party="consumer", now=now)
    return dict(jws.to_json())


def _stored(parties: Parties) -> list[Agreement]:
    with Session(parties.services.engine) as s:
        return list(s.exec(select(Agreement)))


def _refusals(parties: Parties) -> list[dict[str, Any]]:
    log = parties.services.audit_log
    docs = [e.doc() for e in log.entries(0, log.head().size)]
    return [d for d in docs if d["event"] == "agreement_change" and d["outcome"] == "refused"]


def test_system_key_cannot_put_an_agreement_in_force(parties: Parties) -> None:
    signed = _signed(parties, _system_key(parties))
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(signed, actor="t")
    assert err.value.code == "key_bound_to_system"
    assert err.value.status == 422
    assert "population-api" in err.value.detail
    assert _stored(parties) == []
    [entry] = _refusals(parties)
    assert entry["problem"] == "key_bound_to_system"
    assert entry["agreement"] == "person-lookup@1"


def test_department_key_bound_to_a_system_no_longer_signs_agreements(parties: Parties) -> None:
    """Binding the department's key to a system makes it that system's: from then on
    it signs no agreement (the department signs with a key bound to no system)."""
    registry = parties.services.registry
    key = parties.keys["civil-registry"]
    signed = _signed(parties, key)
    registry.add_system("civil-registry", SystemCreate(system_id="population-api"), actor="t")
    registry.bind_key("civil-registry", public_jwk(key)["kid"], "population-api", actor="t")
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(signed, actor="t")
    assert err.value.code == "key_bound_to_system"
    assert _stored(parties) == []


def test_system_key_of_the_consumer_is_refused_too(parties: Parties) -> None:
    now = parties.services.agreements.clock()
    terms = AgreementTerms.from_json(parties.terms())
    jws = sign_agreement(
        {"payload": "", "signatures": []},
        parties.keys["civil-registry"],
        party="provider",
        terms=terms,
        now=now,
    )
    jws = sign_agreement(jws, _system_key(parties, "welfare-office"), party="consumer", now=now)
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(jws.to_json(), actor="t")
    assert err.value.code == "key_bound_to_system"
    assert "signature 1 (consumer)" in err.value.detail


@pytest.fixture
def http(db_url: str, tmp_path: Path, clock: Clock) -> Iterator[tuple[TestClient, Parties]]:
    services = make_services(db_url, tmp_path, clock)
    parties = register_parties(services)
    with TestClient(create_app(services=services)) as client:
        yield client, parties
    services.close()


def test_system_key_signature_is_refused_over_the_api_and_audited(
    http: tuple[TestClient, Parties],
) -> None:
    client, parties = http
    services = parties.services
    signed = _signed(parties, _system_key(parties))
    admin = bearer(services, "admin", sub="carol")
    report = client.post("/v1/agreements/verify", json=signed, headers=admin)
    assert report.status_code == 200, report.text
    assert report.json()["valid"] is False
    assert [s["code"] for s in report.json()["signatures"]] == ["key_bound_to_system", "ok"]
    body = assert_problem(
        client.post("/v1/agreements", json=signed, headers=admin), 422, "key_bound_to_system"
    )
    assert [s["code"] for s in body["signatures"]] == ["key_bound_to_system", "ok"]
    [entry] = _refusals(parties)
    assert (entry["actor"], entry["problem"], entry["status"]) == (
        "user:carol",
        "key_bound_to_system",
        422,
    )
    assert client.get("/v1/agreements", headers=admin).json() == []
