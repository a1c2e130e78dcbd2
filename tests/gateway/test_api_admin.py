"""Admin API: registry and agreements over HTTP, with problem+json for bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.jose import generate_private_key, public_jwk
from gateway.services import Services
from tests.gateway.conftest import Parties, make_services, register_parties


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path, clock) -> Iterator[tuple[TestClient, Services]]:  # type: ignore[no-untyped-def]
    services = make_services(sqlite_url, tmp_path, clock)
    with TestClient(create_app(services=services)) as client:
        yield client, services
    services.close()


def bearer(services: Services, *roles: str, sub: str = "alice") -> dict[str, str]:
    key = dev_issuer_key(services.settings.resolved_key_dir)
    token = issue_dev_token(key, subject=sub, roles=roles, audience="accord")
    return {"Authorization": f"Bearer {token}"}


def assert_problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"] == f"urn:accord:problem:{code}"
    assert body["code"] == code and body["status"] == status and body["title"]
    return dict(body)


def test_register_department_and_keys(env) -> None:  # type: ignore[no-untyped-def]
    client, services = env
    admin = bearer(services, "admin")
    r = client.post(
        "/v1/departments",
        headers=admin,
        json={
            "id": "tax-office",
            "name": "Tax Office",
            "clearance": "confidential",
            "caveats": ["tax"],
        },
    )
    assert r.status_code == 201, r.text
    key = generate_private_key("ES256")
    r = client.post("/v1/departments/tax-office/keys", headers=admin, json={"jwk": public_jwk(key)})
    assert r.status_code == 201 and r.json()["kid"] == public_jwk(key)["kid"]
    jwks = client.get("/v1/departments/tax-office/jwks.json").json()
    assert [k["kid"] for k in jwks["keys"]] == [public_jwk(key)["kid"]]
    r = client.post(
        f"/v1/keys/{public_jwk(key)['kid']}/revoke", headers=admin, json={"reason": "rotation"}
    )
    assert r.status_code == 200 and r.json()["revoked_reason"] == "rotation"
    assert client.get("/v1/departments/tax-office/jwks.json").json()["keys"] == []
    assert [d["id"] for d in client.get("/v1/departments").json()] == ["tax-office"]


def test_roles_are_enforced(env) -> None:  # type: ignore[no-untyped-def]
    client, services = env
    body = {"id": "x-office", "name": "X", "clearance": "internal"}
    assert_problem(client.post("/v1/departments", json=body), 401, "missing_token")
    r = client.post("/v1/departments", json=body, headers=bearer(services, "auditor"))
    assert_problem(r, 403, "role_required")
    r = client.post("/v1/departments", json=body, headers={"Authorization": "Bearer abc.def.ghi"})
    problem = assert_problem(r, 401, "malformed_token")
    assert "WWW-Authenticate" in r.headers and problem["detail"]
    forged = issue_dev_token(
        generate_private_key(), subject="mallory", roles=["admin"], audience="accord"
    )
    r = client.post("/v1/departments", json=body, headers={"Authorization": f"Bearer {forged}"})
    assert_problem(r, 401, "unknown_key")
    assert client.get("/v1/departments").json() == []


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (
            json.dumps({"id": "BAD ID", "name": "x", "clearance": "internal"}).encode(),
            422,
            "validation_failed",
        ),
        (
            json.dumps({"id": "ok-id", "name": "x", "clearance": "cosmic"}).encode(),
            422,
            "unknown_classification_level",
        ),
        (
            json.dumps(
                {"id": "ok-id", "name": "x", "clearance": "internal", "caveats": ["nope"]}
            ).encode(),
            422,
            "unknown_caveat",
        ),
    ],
    ids=["malformed", "schema", "unknown_level", "unknown_caveat"],
)
def test_bad_department_input(env, content: bytes, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    client, services = env
    r = client.post(
        "/v1/departments",
        content=content,
        headers={**bearer(services, "admin"), "content-type": "application/json"},
    )
    assert_problem(r, status, code)
    assert client.get("/v1/departments").json() == []


def test_huge_body_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    client, services = env
    big = b'{"id": "' + b"a" * 2_000_000 + b'"}'
    r = client.post(
        "/v1/departments",
        content=big,
        headers={**bearer(services, "admin"), "content-type": "application/json"},
    )
    assert_problem(r, 413, "body_too_large")


def test_agreement_submit_verify_and_transition(env) -> None:  # type: ignore[no-untyped-def]
    client, services = env
    parties: Parties = register_parties(services)
    admin, auditor = bearer(services, "admin"), bearer(services, "auditor", sub="bob")
    signed = parties.sign(parties.terms())
    report = client.post("/v1/agreements/verify", headers=auditor, json=signed).json()
    assert report["valid"] is True and len(report["signatures"]) == 2
    r = client.post("/v1/agreements", headers=admin, json=signed)
    assert r.status_code == 201 and r.json()["status"] == "active"
    r = client.post(
        "/v1/agreements/person-lookup/versions/1/status",
        headers=admin,
        json={"status": "suspended", "reason": "investigation"},
    )
    assert r.json()["status"] == "suspended"
    events = client.get("/v1/agreements/person-lookup/versions/1/events", headers=auditor).json()
    assert [e["to_status"] for e in events] == ["active", "suspended"]
    assert events[1]["actor"] == "user:alice"


def test_bad_agreements_get_problems_and_nothing_is_stored(env) -> None:  # type: ignore[no-untyped-def]
    client, services = env
    parties = register_parties(services)
    admin = bearer(services, "admin")
    one_signature = parties.sign(parties.terms(), ("provider",))
    assert_problem(
        client.post("/v1/agreements", headers=admin, json=one_signature), 422, "missing_signature"
    )
    tampered = parties.sign(parties.terms())
    tampered["signatures"][0]["signature"] = tampered["signatures"][1]["signature"]
    body = assert_problem(
        client.post("/v1/agreements", headers=admin, json=tampered), 422, "signature_invalid"
    )
    assert body["signatures"][0]["ok"] is False
    too_high = parties.sign(parties.terms(consumer="low-clearance"))
    assert_problem(
        client.post("/v1/agreements", headers=admin, json=too_high),
        422,
        "ceiling_exceeds_clearance",
    )
    unknown = parties.sign(parties.terms())
    unknown["payload"] = "!!!"
    assert_problem(client.post("/v1/agreements", headers=admin, json=unknown), 422, "malformed_jws")
    assert client.get("/v1/agreements", headers=admin).json() == []
