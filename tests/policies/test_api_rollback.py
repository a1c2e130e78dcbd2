"""The acceptance repro over HTTP: after a rollback, reject works on the withdrawn
version and one officer alone cannot activate it again; unknown statuses are 422."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.services import Services
from tests.policies.test_api_policy import api, bearer, problem
from tests.policies.workflow_support import suspend_bundle

pytestmark = pytest.mark.opa
__all__ = ["api"]  # the fixture, used by name


def test_rolled_back_version_needs_two_officers_over_http(
    api: tuple[TestClient, Services],
) -> None:
    client, services = api
    alice, bob, carol = (bearer(services, "officer", n) for n in ("alice", "bob", "carol"))
    version = suspend_bundle().version
    r = client.post("/v1/policies", headers=alice, json={"files": suspend_bundle().sources()})
    assert r.status_code == 201, r.text
    assert client.post(f"/v1/policies/{version}/approve", headers=bob).status_code == 200
    assert client.post(f"/v1/policies/{version}/activate", headers=bob).status_code == 200
    assert client.post("/v1/policies/rollback", headers=bob).status_code == 200

    problem(
        client.post(f"/v1/policies/{version}/activate", headers=alice), 409, "policy_not_approved"
    )
    assert client.post(f"/v1/policies/{version}/approve", headers=carol).status_code == 200
    problem(
        client.post(f"/v1/policies/{version}/activate", headers=carol), 403, "four_eyes_required"
    )
    r = client.post(f"/v1/policies/{version}/reject", headers=carol, json={"reason": "incident"})
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    problem(
        client.post(f"/v1/policies/{version}/activate", headers=bob), 409, "policy_not_approved"
    )
    runtime = services.policy_runtime
    assert runtime is not None and runtime.version != version


def test_unknown_status_filter_is_validation_failed(api: tuple[TestClient, Services]) -> None:
    client, services = api
    auditor = bearer(services, "auditor", "dora")
    problem(client.get("/v1/policies?status=bogus", headers=auditor), 422, "validation_failed")
    listed = client.get("/v1/policies?status=active", headers=auditor)
    assert listed.status_code == 200 and len(listed.json()) == 1
    assert client.get("/v1/policies?status=rolled_back", headers=auditor).json() == []
