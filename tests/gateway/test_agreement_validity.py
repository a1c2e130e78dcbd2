"""Agreement submissions over the admin API: windows, model fields, refusals audited.

From a security officer's review: a version already expired, or not yet valid,
superseded the version in force the moment it was submitted; an agreement could
list fields its dataset's model does not have; and a refused submission left no
trace in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.jose import b64url_encode
from gateway.jose.jws import canonical_bytes
from gateway.services import Services
from tests.gateway.conftest import T0, Clock, Parties, make_services, register_parties
from tests.gateway.test_api_admin import assert_problem, bearer

AGREEMENTS = "/v1/agreements"
LATEST = "/v1/agreements/person-lookup"


@pytest.fixture
def env(db_url: str, tmp_path: Path, clock: Clock) -> Iterator[tuple[TestClient, Parties]]:
    """The app on SQLite and PostgreSQL with version 1 in force."""
    services = make_services(db_url, tmp_path, clock)
    parties = register_parties(services)
    with TestClient(create_app(services=services)) as client:
        r = client.post(AGREEMENTS, json=parties.sign(parties.terms()), headers=_admin(services))
        assert r.status_code == 201, r.text
        yield client, parties
    services.close()


def _admin(services: Services) -> dict[str, str]:
    return bearer(services, "admin", sub="carol")


def _iso(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def _shown(client: TestClient, services: Services, path: str = LATEST) -> tuple[int, str]:
    doc = client.get(path, headers=bearer(services, "auditor")).json()
    return doc["version"], doc["status"]


def _entries(services: Services, event: str, outcome: str) -> list[dict[str, Any]]:
    size = services.audit_log.head().size
    docs = [e.doc() for e in services.audit_log.entries(0, size)]
    return [d for d in docs if d["event"] == event and d["outcome"] == outcome]


# -- Defect 1: a version outside its window must not cut off the one in force --


def test_expired_version_is_refused_and_the_version_in_force_stays(
    env: tuple[TestClient, Parties],
) -> None:
    client, parties = env
    services = parties.services
    doc = parties.terms(version=2, valid_from=_iso(-60), valid_until=_iso(-1))
    r = client.post(AGREEMENTS, json=parties.sign(doc), headers=_admin(services))
    body = assert_problem(r, 422, "agreement_expired")
    assert "person-lookup@2" in body["detail"]
    assert _shown(client, services) == (1, "active")
    assert [a["version"] for a in client.get(AGREEMENTS, headers=_admin(services)).json()] == [1]
    events = services.agreements.events("person-lookup", 1)
    assert [e.to_status for e in events] == ["active"]


def test_future_version_waits_and_takes_over_at_its_valid_from(
    env: tuple[TestClient, Parties], clock: Clock
) -> None:
    client, parties = env
    services = parties.services
    doc = parties.terms(version=2, valid_from=_iso(10))
    r = client.post(AGREEMENTS, json=parties.sign(doc), headers=_admin(services))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "not_yet_valid"
    # Before valid_from the version in force keeps deciding.
    assert _shown(client, services) == (1, "active")
    assert _shown(client, services, f"{LATEST}/versions/1") == (1, "active")
    assert services.agreements.get("person-lookup").version == 1
    assert services.agreements.take_over_due() == 0
    assert services.agreements.next_takeover() == T0 + timedelta(days=10)
    # From valid_from, version 2 decides, before anything was recorded ...
    clock.now = T0 + timedelta(days=10)
    assert _shown(client, services) == (2, "active")
    assert _shown(client, services, f"{LATEST}/versions/1") == (1, "superseded")
    assert services.agreements.get("person-lookup").version == 2
    # ... and the takeover is recorded once.
    assert services.agreements.take_over_due() == 1
    assert services.agreements.take_over_due() == 0
    assert services.agreements.next_takeover() is None
    events = services.agreements.events("person-lookup", 1)
    assert [(e.to_status, e.actor) for e in events] == [
        ("active", "user:carol"),
        ("superseded", "system:clock"),
    ]
    [entry] = _entries(services, "agreement_change", "superseded")
    assert entry["agreement"] == "person-lookup@1"


def test_version_already_in_its_window_supersedes_at_once(
    env: tuple[TestClient, Parties],
) -> None:
    client, parties = env
    services = parties.services
    doc = parties.terms(version=2, valid_from=_iso(-1))
    r = client.post(AGREEMENTS, json=parties.sign(doc), headers=_admin(services))
    assert r.status_code == 201, r.text
    assert _shown(client, services) == (2, "active")
    assert _shown(client, services, f"{LATEST}/versions/1") == (1, "superseded")
    assert services.agreements.get("person-lookup", 1).status == "superseded"


def test_the_policy_judges_a_window_not_yet_open_as_active(
    env: tuple[TestClient, Parties],
) -> None:
    """The exchange hands the policy a lifecycle status it can word; the window's
    start is the policy's to judge ("agreement is not yet valid")."""
    client, parties = env
    services = parties.services
    doc = parties.terms(id="person-later", valid_from=_iso(10))
    r = client.post(AGREEMENTS, json=parties.sign(doc), headers=_admin(services))
    assert r.status_code == 201, r.text
    row = services.agreements.get("person-later")
    assert services.agreements.status_at(row, T0) == "active"
    assert services.agreements.public(row, T0).status == "not_yet_valid"


# -- Defect 3: fields the dataset's model does not have --------------------------


def test_field_the_model_lacks_is_refused_naming_it(env: tuple[TestClient, Parties]) -> None:
    client, parties = env
    services = parties.services
    doc = parties.terms(version=2)
    fields = doc["datasets"][0]["fields"]
    fields["shoe_size"] = {"operation": "pass"}
    fields["blood_type"] = {"operation": "mask"}
    r = client.post(AGREEMENTS, json=parties.sign(doc), headers=_admin(services))
    body = assert_problem(r, 422, "unknown_fields")
    assert body["unknown_fields"] == {"person": ["blood_type", "shoe_size"]}
    assert "shoe_size" in body["detail"] and "person@1" in body["detail"]
    assert _shown(client, services) == (1, "active")
    r = client.post(f"{AGREEMENTS}/drafts", json={"terms": doc}, headers=_admin(services))
    assert_problem(r, 422, "unknown_fields")


def test_model_that_is_not_registered_is_refused(env: tuple[TestClient, Parties]) -> None:
    client, parties = env
    doc = parties.terms(version=2)
    doc["datasets"][0]["model"] = "starship@1"
    r = client.post(AGREEMENTS, json=parties.sign(doc), headers=_admin(parties.services))
    assert_problem(r, 422, "unknown_model")


# -- Defect 2: every refused submission is audited ----------------------------------


def _tampered(parties: Parties) -> Any:
    signed = parties.sign(parties.terms(version=2))
    sig = signed["signatures"][0]["signature"]
    signed["signatures"][0]["signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    return signed


def _with_terms(signed: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """``signed`` with its payload swapped for ``doc`` (schema-checked before signatures)."""
    return {**signed, "payload": b64url_encode(canonical_bytes(doc))}


def _unknown_department(parties: Parties) -> Any:
    """Signed by both parties, naming an authority no one registered."""
    return parties.sign(parties.terms(version=2, authority="no-such-authority"))


REFUSED = [
    ("tampered_signature", _tampered, 422, None, "person-lookup@2"),
    (
        "schema_violation",
        lambda p: _with_terms(p.sign(p.terms(version=2)), p.terms(version=2, purposes=[])),
        422,
        None,
        None,
    ),
    ("not_a_jws", lambda p: {"payload": 5}, 422, "malformed_jws", None),
    ("unknown_department", _unknown_department, 404, "unknown_department", "person-lookup@2"),
    ("stale_version", lambda p: p.sign(p.terms()), 409, "agreement_exists", "person-lookup@1"),
    (
        "unknown_fields",
        lambda p: p.sign(
            p.terms(
                version=2,
                datasets=[
                    {
                        "id": "person",
                        "model": "person@1",
                        "fields": {"x_ray": {"operation": "pass"}},
                    }
                ],
            )
        ),
        422,
        "unknown_fields",
        "person-lookup@2",
    ),
]


@pytest.mark.parametrize(
    ("make", "status", "code", "ref"),
    [r[1:] for r in REFUSED],
    ids=[r[0] for r in REFUSED],
)
def test_refused_submission_is_audited(
    env: tuple[TestClient, Parties], make: Any, status: int, code: str | None, ref: str | None
) -> None:
    client, parties = env
    services = parties.services
    before = len(_entries(services, "agreement_change", "refused"))
    r = client.post(AGREEMENTS, json=make(parties), headers=_admin(services))
    assert r.status_code == status, r.text
    problem = r.json()
    if code is not None:
        assert problem["code"] == code
    entries = _entries(services, "agreement_change", "refused")
    assert len(entries) == before + 1
    entry = entries[-1]
    assert entry["actor"] == "user:carol"
    assert entry["problem"] == problem["code"]
    assert entry["status"] == status
    assert entry.get("agreement") == ref
    assert len(entry["request_sha256"]) == 64
    assert entry["detail"]["submission"] == "signed"


def test_refused_draft_is_audited(env: tuple[TestClient, Parties]) -> None:
    client, parties = env
    services = parties.services
    r = client.post(
        f"{AGREEMENTS}/drafts",
        json={"terms": parties.terms(version=2, ceiling_typo=True)},
        headers=_admin(services),
    )
    assert_problem(r, 422, "agreement_schema_violation")
    [entry] = _entries(services, "agreement_change", "refused")
    assert entry["problem"] == "agreement_schema_violation"
    assert entry["detail"]["submission"] == "draft"
    assert "agreement" not in entry  # the terms did not parse: nothing of them is copied
