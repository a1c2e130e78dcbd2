"""An approved change is activated only on the version it was approved against.

The attack: V1 and V2 are both proposed on the active version and approved; V2
is activated; activating V1 then would put V1's bundle in force, silently
undoing V2's approved rule. The approval of V1 covered its change from its base,
so the gateway refuses with 409 ``policy_base_stale``; the officer proposes the
change again on the active version. A rollback (explicit, audited on its own)
and returning to a superseded version keep working.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.cli.main import app as cli
from gateway.policy.bundle import PolicyBundle
from gateway.policy.errors import PolicyStateConflict
from gateway.services import Services, build_services
from tests._support.gateway import serving_in_thread
from tests.policies.conftest import POLICY_DIR
from tests.policies.test_api_policy import api, bearer, gateway_settings, problem
from tests.policies.test_cli_policy import token
from tests.policies.workflow_support import (
    SUSPEND_RULE,
    SUSPEND_TEST,
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

#: A second reviewed change, made on the shipped bundle like the suspend change.
CAP_RULE = """package accord.exchange

deny_reasons contains reason("purpose_not_permitted", "agr-3 is capped") if {
\tinput.agreement.id == "agr-3"
}
"""


def cap_bundle() -> PolicyBundle:
    return bundle_with({"cap.rego": CAP_RULE})


def rebased_bundle() -> PolicyBundle:
    """The suspend change made again on top of the cap change."""
    return bundle_with(
        {"cap.rego": CAP_RULE, "suspend.rego": SUSPEND_RULE, "suspend_test.rego": SUSPEND_TEST}
    )


def test_stale_base_activation_refused_over_http(api: tuple[TestClient, Services]) -> None:
    client, services = api
    alice, bob = bearer(services, "officer", "alice"), bearer(services, "officer", "bob")
    auditor = bearer(services, "auditor", "carol")
    shipped = client.get("/v1/policies/active", headers=auditor).json()["version"]
    older, newer = suspend_bundle(), cap_bundle()
    for b in (older, newer):
        r = client.post("/v1/policies", headers=alice, json={"files": b.sources()})
        assert r.status_code == 201 and r.json()["base_version"] == shipped, r.text
        assert client.post(f"/v1/policies/{b.version}/approve", headers=bob).status_code == 200
    assert client.post(f"/v1/policies/{newer.version}/activate", headers=bob).status_code == 200
    entries_before = len(policy_events(services.audit_log))

    body = problem(
        client.post(f"/v1/policies/{older.version}/activate", headers=bob), 409, "policy_base_stale"
    )
    assert body["version"] == older.version
    assert body["base_version"] == shipped and body["active_version"] == newer.version
    assert shipped in body["detail"] and newer.version in body["detail"]
    # Nothing changed: the newer rule still decides, on this node too, and nothing was audited.
    assert client.get("/v1/policies/active", headers=auditor).json()["version"] == newer.version
    assert services.policy_runtime is not None
    assert services.policy_runtime.version == newer.version
    assert client.get(f"/v1/policies/{older.version}", headers=auditor).json()["status"] == (
        "approved"
    )
    assert len(policy_events(services.audit_log)) == entries_before

    # The rebase: the same change proposed on the active version goes through.
    rebased = rebased_bundle()
    r = client.post("/v1/policies", headers=alice, json={"files": rebased.sources()})
    assert r.status_code == 201 and r.json()["base_version"] == newer.version, r.text
    assert client.post(f"/v1/policies/{rebased.version}/approve", headers=bob).status_code == 200
    r = client.post(f"/v1/policies/{rebased.version}/activate", headers=bob)
    assert r.status_code == 200 and r.json()["active"] is True, r.text
    activated = policy_events(services.audit_log)[-1]
    assert activated["outcome"] == "activated" and activated["detail"]["reactivated"] is False
    assert activated["detail"]["base_version"] == hexv(newer.version)


def test_stale_base_activation_refused_from_the_cli(
    sqlite_url: str, tmp_path: Path, opa_bin: Path
) -> None:
    services = build_services(gateway_settings(sqlite_url, tmp_path, opa_bin))
    try:
        with serving_in_thread(services) as url:
            shipped = services.policy.active_version()
            older, newer = suspend_bundle(), cap_bundle()
            for b in (older, newer):
                services.policy.propose(b, actor=ALICE)
                services.policy.approve(b.version, actor=BOB)
            services.policy.activate(newer.version, actor=BOB)
            env = {"ACCORD_URL": url, "ACCORD_TOKEN": token(services, "bob"), "COLUMNS": "200"}
            r = CliRunner().invoke(cli, ["policy", "activate", hexv(older.version)[:12]], env=env)
            assert r.exit_code == 1, r.output
            assert "policy_base_stale" in r.output
            out = " ".join(r.output.split())
            assert f"base {shipped}" in out and f"active {newer.version}" in out
            assert services.policy.active_version() == newer.version
    finally:
        services.close()


def test_stale_base_refused_on_both_stores(db_url: str, opa_bin: Path) -> None:
    """The service refuses too, on SQLite and PostgreSQL, also for a version approved
    again after a rollback whose base is no longer active (approved while it was:
    ``approve`` refuses a stale base itself, ``test_approve_stale``)."""
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        older, newer = suspend_bundle(), cap_bundle()
        service.propose(older, actor=ALICE)
        service.approve(older.version, actor=BOB)
        service.activate(older.version, actor=BOB)
        service.rollback(actor=BOB)  # older withdrawn, shipped active again
        service.approve(older.version, actor=CAROL)  # a fresh approval after the rollback
        service.propose(newer, actor=ALICE)
        service.approve(newer.version, actor=BOB)
        service.activate(newer.version, actor=BOB)
        with pytest.raises(PolicyStateConflict) as err:
            service.activate(older.version, actor=BOB)
        assert err.value.code == "policy_base_stale" and err.value.status == 409
        assert err.value.extra == {
            "version": older.version,
            "base_version": shipped,
            "active_version": newer.version,
        }
        assert service.active_version() == newer.version
        assert service.get(older.version).status == "approved"
        assert [e["outcome"] for e in policy_events(audit)][-1] == "activated"


def test_rollback_still_returns_and_reopens_the_base(db_url: str, opa_bin: Path) -> None:
    """Undoing the newer change is a rollback, audited as such; afterwards the older
    change's base is active again and it activates."""
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        older, newer = suspend_bundle(), cap_bundle()
        for b in (older, newer):
            service.propose(b, actor=ALICE)
            service.approve(b.version, actor=BOB)
        service.activate(newer.version, actor=BOB)
        with pytest.raises(PolicyStateConflict):
            service.activate(older.version, actor=BOB)

        back = service.rollback(actor=ALICE)
        assert back.version == shipped and service.get(newer.version).status == "rolled_back"
        assert service.activate(older.version, actor=BOB).active
        events = policy_events(audit)
        assert [(e["outcome"], e["policy_version"]) for e in events[-2:]] == [
            ("rolled_back", hexv(shipped)),
            ("activated", hexv(older.version)),
        ]
        assert events[-1]["detail"]["base_version"] == hexv(shipped)


def test_superseded_version_still_reactivates_whole(db_url: str, opa_bin: Path) -> None:
    """A retired version was active itself: returning to it is a rollback-like step on
    a whole policy, not a change applied on a base, and is audited as a reactivation."""
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        first = suspend_bundle()
        service.propose(first, actor=ALICE)
        service.approve(first.version, actor=BOB)
        service.activate(first.version, actor=BOB)
        second = rebased_bundle()  # proposed on `first`
        service.propose(second, actor=ALICE)
        service.approve(second.version, actor=BOB)
        service.activate(second.version, actor=BOB)
        assert service.get(shipped).status == "retired"
        assert service.activate(shipped, actor=ALICE).active  # base None, active `second`
        last = policy_events(audit)[-1]
        assert last["outcome"] == "activated" and last["detail"]["reactivated"] is True
        assert last["detail"]["previous_version"] == hexv(second.version)
