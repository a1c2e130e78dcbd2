"""A rolled-back version is withdrawn: one officer alone can neither roll it forward
again nor keep others from blocking it for good (four eyes after a rollback).

Runs on SQLite and PostgreSQL (``db_url``) with the real ``opa`` binary and the
real audit log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.errors import FourEyesViolation, NothingToRollBack, PolicyStateConflict
from gateway.policy.service import PolicyService
from tests.policies.conftest import POLICY_DIR
from tests.policies.workflow_support import (
    Clock,
    bundle_with,
    hexv,
    policy_events,
    policy_store,
    suspend_bundle,
)

pytestmark = pytest.mark.opa

ALICE, BOB, CAROL = "user:alice", "user:bob", "user:carol"


def _active_then_rolled_back(service: PolicyService) -> tuple[str, str]:
    """Alice proposes, Bob approves and activates, Bob rolls back: (shipped, withdrawn)."""
    shipped = service.ensure_initial(POLICY_DIR)
    version = suspend_bundle().version
    service.propose(suspend_bundle(), actor=ALICE)
    service.approve(version, actor=BOB)
    service.activate(version, actor=BOB)
    service.rollback(actor=BOB)
    return shipped, version


def test_rolled_back_version_cannot_be_reactivated_by_one_officer(
    db_url: str, opa_bin: Path
) -> None:
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped, version = _active_then_rolled_back(service)
        assert service.get(version).status == "rolled_back"
        for officer in (ALICE, BOB, CAROL):
            with pytest.raises(PolicyStateConflict) as err:
                service.activate(version, actor=officer)
            assert err.value.code == "policy_not_approved"
        assert service.active_version() == shipped

        # A fresh approval follows the usual rule: never by the proposer.
        with pytest.raises(FourEyesViolation):
            service.approve(version, actor=ALICE)
        again = service.approve(version, actor=CAROL)
        assert again.status == "approved" and again.approver == CAROL
        # ... and whoever approved it again may not be the one who activates it.
        with pytest.raises(FourEyesViolation) as alone:
            service.activate(version, actor=CAROL)
        assert alone.value.code == "four_eyes_required" and alone.value.status == 403
        assert service.active_version() == shipped
        assert service.activate(version, actor=BOB).active

        events = [(e["outcome"], e["actor"]) for e in policy_events(audit)]
        assert events[-5:] == [
            ("approved", BOB),
            ("activated", BOB),
            ("rolled_back", BOB),
            ("approved", CAROL),
            ("activated", BOB),
        ]
        reapproved = [e for e in policy_events(audit) if e["outcome"] == "approved"][-1]
        assert reapproved["detail"]["after_rollback"] is True


def test_rolled_back_and_superseded_versions_can_be_rejected_for_good(
    db_url: str, opa_bin: Path
) -> None:
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped, version = _active_then_rolled_back(service)
        rejected = service.reject(version, actor=CAROL, reason="withdrawn after the incident")
        assert rejected.status == "rejected" and rejected.rejected_by == CAROL
        for step in (service.approve, service.activate):
            with pytest.raises(PolicyStateConflict):
                step(version, actor=CAROL)
        last = policy_events(audit)[-1]
        assert (last["outcome"], last["policy_version"]) == ("rejected", hexv(version))
        assert last["detail"]["previous_status"] == "rolled_back"

        with pytest.raises(PolicyStateConflict) as active:
            service.reject(shipped, actor=CAROL, reason="no")
        assert active.value.code == "policy_not_rejectable"
        with pytest.raises(PolicyStateConflict) as twice:
            service.reject(version, actor=CAROL, reason="again")
        assert twice.value.code == "policy_not_rejectable"


def test_rollback_never_lands_on_a_blocked_version(db_url: str, opa_bin: Path) -> None:
    """Shipped, then V1, then V2 active; V1 (superseded) is rejected: a rollback from
    V2 passes over V1 to the shipped bundle instead of reviving what was rejected."""
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        v1, v2 = (
            bundle_with({f"v{i}_test.rego": f"package v{i}_test\n\ntest_ok if true\n"})
            for i in (1, 2)
        )
        for b in (v1, v2):
            service.propose(b, actor=ALICE)
            service.approve(b.version, actor=BOB)
            service.activate(b.version, actor=BOB)
        assert service.get(v1.version).status == "retired"
        service.reject(v1.version, actor=CAROL, reason="found a flaw")
        back = service.rollback(actor=ALICE)
        assert back.version == shipped and service.active_version() == shipped
        assert service.get(v1.version).status == "rejected"
        assert service.get(v2.version).status == "rolled_back"
        last = policy_events(audit)[-1]
        assert last["outcome"] == "rolled_back"
        assert last["detail"]["passed_over"] == [hexv(v1.version)]
        with pytest.raises(NothingToRollBack):
            service.rollback(actor=ALICE)


def test_superseded_version_may_still_be_reactivated(db_url: str, opa_bin: Path) -> None:
    """Superseded is not withdrawn: it passed four eyes and going back to it is what a
    rollback does, which one officer may do in an incident."""
    with policy_store(db_url, opa_bin, Clock()) as (service, _, _engine):
        shipped = service.ensure_initial(POLICY_DIR)
        version = suspend_bundle().version
        service.propose(suspend_bundle(), actor=ALICE)
        service.approve(version, actor=BOB)
        service.activate(version, actor=BOB)
        assert service.get(shipped).status == "retired"
        assert service.activate(shipped, actor=ALICE).active
        # Going back from the shipped bundle withdraws it, not the suspend version.
        service.rollback(actor=ALICE)
        assert service.active_version() == version
        assert service.get(shipped).status == "rolled_back"
