"""The officers' workflow over HTTP: roles, four eyes and bad bundles as problem+json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.services import Services, build_services
from gateway.settings import Settings
from tests.policies.conftest import POLICY_DIR
from tests.policies.workflow_support import hexv, policy_events, shipped_sources, suspend_bundle

pytestmark = pytest.mark.opa


def gateway_settings(db_url: str, data_dir: Path, opa_bin: Path, **kw: Any) -> Settings:
    return Settings(
        dev_mode=True,
        database_url=db_url,
        data_dir=data_dir,
        policy_dir=POLICY_DIR,
        opa_bin=opa_bin,
        **kw,
    )


@pytest.fixture
def api(sqlite_url: str, tmp_path: Path, opa_bin: Path) -> Iterator[tuple[TestClient, Services]]:
    services = build_services(gateway_settings(sqlite_url, tmp_path, opa_bin))
    with TestClient(create_app(services=services)) as client:
        yield client, services
    services.close()


def bearer(services: Services, role: str, sub: str) -> dict[str, str]:
    key = dev_issuer_key(services.settings.resolved_key_dir)
    token = issue_dev_token(key, subject=sub, roles=[role], audience="accord")
    return {"Authorization": f"Bearer {token}"}


def problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["type"] == f"urn:accord:problem:{code}" and body["code"] == code
    return body


def test_workflow_over_http(api: tuple[TestClient, Services]) -> None:
    client, services = api
    alice = bearer(services, "officer", "alice")
    bob = bearer(services, "officer", "bob")
    auditor = bearer(services, "auditor", "carol")

    shipped = client.get("/v1/policies/active", headers=auditor).json()["version"]
    proposed = suspend_bundle()
    r = client.post(
        "/v1/policies",
        headers=alice,
        json={"files": proposed.sources(), "note": "suspend agr-2 eligibility checks"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "checked" and r.json()["version"] == proposed.version
    version = proposed.version

    body = problem(
        client.post(f"/v1/policies/{version}/approve", headers=alice), 403, "four_eyes_required"
    )
    assert "alice" in body["detail"]
    problem(
        client.post(f"/v1/policies/{version}/activate", headers=bob), 409, "policy_not_approved"
    )

    r = client.post(f"/v1/policies/{version}/impact", headers=bob, json={"days": 7})
    assert r.status_code == 200 and r.json()["baseline"] == shipped and r.json()["days"] == 7

    r = client.post(f"/v1/policies/{hexv(version)[:10]}/approve", headers=bob)
    assert r.status_code == 200 and r.json()["approver"] == "user:bob"
    r = client.post(f"/v1/policies/{version}/activate", headers=bob)
    assert r.status_code == 200 and r.json()["active"] is True
    runtime = services.policy_runtime
    assert runtime is not None and runtime.version == version  # this node loaded it at once

    listed = client.get("/v1/policies", headers=auditor).json()
    assert {(v["version"], v["status"]) for v in listed} == {
        (version, "active"),
        (shipped, "retired"),
    }
    detail = client.get(f"/v1/policies/{version}", headers=auditor).json()
    assert detail["sources"]["suspend.rego"].startswith("package accord.exchange")

    r = client.post("/v1/policies/rollback", headers=alice)
    assert r.status_code == 200 and r.json()["version"] == shipped
    assert runtime.version == shipped
    history = client.get("/v1/policies/history", headers=auditor).json()
    assert [h["action"] for h in history] == ["rollback", "activate", "bootstrap"]
    problem(client.post("/v1/policies/rollback", headers=alice), 409, "nothing_to_roll_back")

    outcomes = [e["outcome"] for e in policy_events(services.audit_log)]
    assert outcomes == [
        "activated",
        "proposed",
        "checked",
        "impact_assessed",
        "approved",
        "activated",
        "rolled_back",
    ]


def test_roles_are_enforced(api: tuple[TestClient, Services]) -> None:
    client, services = api
    bundle = {"files": suspend_bundle().sources()}
    problem(client.get("/v1/policies"), 401, "missing_token")
    for role in ("auditor", "admin", "department"):
        who = bearer(services, role, "mallory")
        problem(client.post("/v1/policies", headers=who, json=bundle), 403, "role_required")
        problem(client.post("/v1/policies/rollback", headers=who), 403, "role_required")
    problem(
        client.get("/v1/policies", headers=bearer(services, "admin", "root")), 403, "role_required"
    )
    active = client.get("/v1/policies/active", headers=bearer(services, "auditor", "carol"))
    assert active.status_code == 200 and active.json()["status"] == "active"
    version = active.json()["version"]
    for step in ("approve", "activate", "impact"):
        r = client.post(
            f"/v1/policies/{version}/{step}", headers=bearer(services, "auditor", "carol")
        )
        problem(r, 403, "role_required")
    # Nothing an unauthorised caller sent was stored.
    assert len(client.get("/v1/policies", headers=bearer(services, "officer", "x")).json()) == 1


def test_bad_bundles_are_problem_json_and_change_nothing(api: tuple[TestClient, Services]) -> None:
    client, services = api
    alice = bearer(services, "officer", "alice")
    before = client.get("/v1/policies/active", headers=alice).json()["version"]
    files = shipped_sources() | {
        "remote.rego": 'package accord.exchange\n\nx := http.send({"method": "get", "url": "u"})\n'
    }
    body = problem(
        client.post("/v1/policies", headers=alice, json={"files": files}), 422, "policy_rejected"
    )
    assert "remote.rego:3" in body["detail"] and "http.send" in body["detail"]
    assert {c["name"] for c in body["checks"] if c["status"] == "failed"} == {
        "builtins",
        "opa_check",  # compiled under the same reduced capabilities
    }
    assert {c["name"] for c in body["checks"] if c["status"] == "skipped"} == {"rego_tests"}
    assert (
        client.get(f"/v1/policies/{body['version']}", headers=alice).json()["status"] == "rejected"
    )

    syntax = shipped_sources() | {"exchange.rego": "package accord.exchange\n\nx := {\n"}
    body = problem(
        client.post("/v1/policies", headers=alice, json={"files": syntax}), 422, "policy_rejected"
    )
    assert "exchange.rego:" in body["detail"]

    for bad_files in ({"../escape.rego": "package x\n"}, {"a.txt": "hello"}):
        problem(
            client.post("/v1/policies", headers=alice, json={"files": bad_files}),
            422,
            "validation_failed",
        )
    problem(
        client.post("/v1/policies", headers=alice, json={"files": {}}), 422, "validation_failed"
    )
    problem(client.get("/v1/policies/not-a-version", headers=alice), 404, "policy_not_found")
    assert client.get("/v1/policies/active", headers=alice).json()["version"] == before
    assert services.policy_runtime is not None and services.policy_runtime.version == before


def test_openapi_documents_the_policy_routes(api: tuple[TestClient, Services]) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/policies",
        "/v1/policies/active",
        "/v1/policies/rollback",
        "/v1/policies/{version}",
        "/v1/policies/{version}/impact",
        "/v1/policies/{version}/approve",
        "/v1/policies/{version}/activate",
    ):
        assert path in paths, path
    ok = paths["/v1/policies/{version}/impact"]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/ImpactReport")
    assert "403" in paths["/v1/policies/{version}/approve"]["post"]["responses"]


def test_a_draft_the_gateway_cannot_check_says_why(api: tuple[TestClient, Services]) -> None:
    """A gateway without an opa binary keeps a proposal as a draft: the answer, the
    version's view and the CLI say why and how to run the checks, instead of a bare
    ``checks_ok: null``; once checked, the reason is gone."""
    client, services = api
    opa_bin, services.policy.opa_bin = services.policy.opa_bin, None
    alice = bearer(services, "officer", "alice")
    proposed = suspend_bundle()
    r = client.post("/v1/policies", headers=alice, json={"files": proposed.sources()})
    assert r.status_code == 201, r.text
    view = r.json()
    assert view["status"] == "draft" and view["checks_ok"] is None
    assert "opa binary (ACCORD_OPA_BIN)" in view["checks_pending"]
    assert f"/v1/policies/{proposed.version}/check" in view["checks_pending"]
    shown = client.get(f"/v1/policies/{proposed.version}", headers=alice).json()
    assert shown["checks_pending"] == view["checks_pending"]
    check = f"/v1/policies/{proposed.version}/check"
    problem(client.post(check, headers=alice), 503, "policy_checks_unavailable")
    services.policy.opa_bin = opa_bin
    r = client.post(check, headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "checked" and r.json()["checks_pending"] is None
