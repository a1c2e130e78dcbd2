"""A change whose base is no longer active is not put to a second officer.

The defect: V1 and V2 were proposed on the active version; V2 was approved and
activated; V1 could still be approved, though ``activate`` refuses it for good
(409 ``policy_base_stale``): the reviewer signed off a change that can never be
put in force as reviewed. ``approve`` now refuses it the same way, naming the
base and the active version, and leaves the same audit trail as the refused
activation. A rolled-back version is approved again only while its base is
active; rollbacks and returning to a superseded version keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from audit import AuditLog
from gateway.cli.main import app as cli
from gateway.policy.errors import PolicyStateConflict
from gateway.services import Services, build_services
from tests._support.gateway import serving_in_thread
from tests.policies.conftest import POLICY_DIR
from tests.policies.test_api_policy import api, bearer, gateway_settings, problem
from tests.policies.test_cli_policy import token
from tests.policies.test_policy_activation_base import cap_bundle, rebased_bundle
from tests.policies.workflow_support import (
    Clock,
    bundle_with,
    hexv,
    policy_events,
    policy_store,
    suspend_bundle,
)

pytestmark = pytest.mark.opa
__all__ = ["api"]  # the fixture, used by name

ALICE, BOB, CAROL = "user:alice", "user:bob", "user:carol"


def entries(audit: AuditLog) -> list[tuple[str, str | None]]:
    """Every entry's event and outcome, the kinds a refusal could leave."""
    return [(e.doc()["event"], e.doc().get("outcome")) for e in audit.entries(0, 10_000)]


def test_stale_base_approval_refused_over_http(api: tuple[TestClient, Services]) -> None:
    client, services = api
    alice, bob = bearer(services, "officer", "alice"), bearer(services, "officer", "bob")
    auditor = bearer(services, "auditor", "carol")
    shipped = client.get("/v1/policies/active", headers=auditor).json()["version"]
    approved_first, newer = suspend_bundle(), cap_bundle()
    late = bundle_with({"late_test.rego": "package late_test\n\ntest_ok if true\n"})
    for b in (approved_first, newer, late):
        r = client.post("/v1/policies", headers=alice, json={"files": b.sources()})
        assert r.status_code == 201 and r.json()["base_version"] == shipped, r.text
    for b in (approved_first, newer):
        assert client.post(f"/v1/policies/{b.version}/approve", headers=bob).status_code == 200
    assert client.post(f"/v1/policies/{newer.version}/activate", headers=bob).status_code == 200

    before = entries(services.audit_log)
    body = problem(
        client.post(f"/v1/policies/{hexv(late.version)[:12]}/approve", headers=bob),
        409,
        "policy_base_stale",
    )
    assert body["version"] == late.version
    assert body["base_version"] == shipped and body["active_version"] == newer.version
    assert shipped in body["detail"] and newer.version in body["detail"]
    view = client.get(f"/v1/policies/{late.version}", headers=auditor).json()
    assert view["status"] == "checked" and view["approver"] is None
    refused_approval = entries(services.audit_log)[len(before) :]

    # The refused activation of a change approved before its base went stale
    # leaves the very same trail: the two refusals are audited alike.
    before = entries(services.audit_log)
    problem(
        client.post(f"/v1/policies/{approved_first.version}/activate", headers=bob),
        409,
        "policy_base_stale",
    )
    assert entries(services.audit_log)[len(before) :] == refused_approval
    assert not [e for e in refused_approval if e[0] == "policy_change"]

    # The same change proposed again on the active version is approved.
    rebased = rebased_bundle()
    r = client.post("/v1/policies", headers=alice, json={"files": rebased.sources()})
    assert r.status_code == 201 and r.json()["base_version"] == newer.version, r.text
    r = client.post(f"/v1/policies/{rebased.version}/approve", headers=bob)
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text

    openapi = client.get("/openapi.json").json()
    answer = openapi["paths"]["/v1/policies/{version}/approve"]["post"]["responses"]["409"]
    assert set(answer["x-problem-codes"]) == {"policy_not_checked", "policy_base_stale"}


def test_stale_base_approval_refused_from_the_cli(
    sqlite_url: str, tmp_path: Path, opa_bin: Path
) -> None:
    services = build_services(gateway_settings(sqlite_url, tmp_path, opa_bin))
    try:
        with serving_in_thread(services) as url:
            shipped = services.policy.active_version()
            older, newer = suspend_bundle(), cap_bundle()
            for b in (older, newer):
                services.policy.propose(b, actor=ALICE)
            services.policy.approve(newer.version, actor=BOB)
            services.policy.activate(newer.version, actor=BOB)
            env = {"ACCORD_URL": url, "ACCORD_TOKEN": token(services, "bob"), "COLUMNS": "200"}
            r = CliRunner().invoke(cli, ["policy", "approve", hexv(older.version)[:12]], env=env)
            assert r.exit_code == 1, r.output
            assert "policy_base_stale" in r.output
            out = " ".join(r.output.split())
            assert f"version {older.version}" in out
            assert f"base {shipped}" in out and f"active {newer.version}" in out
            assert services.policy.get(older.version).status == "checked"
    finally:
        services.close()


def test_rolled_back_version_is_approved_again_only_on_its_base(db_url: str, opa_bin: Path) -> None:
    """A rolled-back version approved again would be activated as its change from its
    base: while another version is active it is refused, with no entry; once a rollback
    brings its base back, it is approved and activated by two officers, as before."""
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        older, newer = suspend_bundle(), cap_bundle()
        service.propose(older, actor=ALICE)
        service.approve(older.version, actor=BOB)
        service.activate(older.version, actor=BOB)
        service.rollback(actor=BOB)  # older withdrawn, shipped active again
        service.propose(newer, actor=ALICE)
        service.approve(newer.version, actor=BOB)
        service.activate(newer.version, actor=BOB)
        trail = policy_events(audit)

        with pytest.raises(PolicyStateConflict) as err:
            service.approve(older.version, actor=CAROL)
        assert err.value.code == "policy_base_stale" and err.value.status == 409
        assert err.value.extra == {
            "version": older.version,
            "base_version": shipped,
            "active_version": newer.version,
        }
        assert service.get(older.version).status == "rolled_back"
        assert policy_events(audit) == trail

        service.rollback(actor=ALICE)  # newer withdrawn: older's base is active again
        assert service.approve(older.version, actor=CAROL).status == "approved"
        assert service.activate(older.version, actor=BOB).active
        outcomes: list[Any] = [(e["outcome"], e["policy_version"]) for e in policy_events(audit)]
        assert outcomes[-3:] == [
            ("rolled_back", hexv(shipped)),
            ("approved", hexv(older.version)),
            ("activated", hexv(older.version)),
        ]


def test_superseded_version_reactivates_without_approval(db_url: str, opa_bin: Path) -> None:
    """Returning to a retired version needs no approval, so its base is not asked for:
    the shipped bundle (no base at all) still comes back whole after two changes."""
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        first, second = suspend_bundle(), rebased_bundle()
        service.propose(first, actor=ALICE)
        service.approve(first.version, actor=BOB)
        service.activate(first.version, actor=BOB)
        service.propose(second, actor=ALICE)  # proposed on `first`
        service.approve(second.version, actor=BOB)
        service.activate(second.version, actor=BOB)
        assert service.activate(first.version, actor=CAROL).active  # retired, base shipped
        assert service.activate(shipped, actor=CAROL).active
        last = policy_events(audit)[-1]
        assert last["outcome"] == "activated" and last["detail"]["reactivated"] is True
