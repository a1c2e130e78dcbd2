"""Invariant 4: a policy change is proposed, checked, approved by a second officer and
audited before it decides anything; bad bundles and wrong steps change nothing.

Runs on SQLite and PostgreSQL (``db_url``) with the real ``opa`` binary and the
real audit log.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.errors import AccordError
from gateway.policy.checks import PolicyRejected
from gateway.policy.errors import FourEyesViolation, NothingToRollBack, PolicyStateConflict
from gateway.policy.models import PolicyVersion
from gateway.policy.service import PolicyService
from tests.policies.conftest import POLICY_DIR
from tests.policies.workflow_support import (
    Clock,
    bundle_with,
    hexv,
    policy_events,
    policy_store,
    shipped_sources,
    suspend_bundle,
)

pytestmark = pytest.mark.opa

ALICE, BOB = "user:alice", "user:bob"


def test_full_workflow_and_rollback(db_url: str, opa_bin: Path) -> None:
    clock = Clock()
    with policy_store(db_url, opa_bin, clock) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        assert service.ensure_initial(POLICY_DIR) == shipped  # idempotent
        assert service.active_version() == shipped
        assert service.active_bundle() is not None
        assert service.active_bundle().version == shipped  # type: ignore[union-attr]

        proposed = suspend_bundle()
        clock.advance(minutes=1)
        view = service.propose(proposed, actor=ALICE, note="suspend eligibility checks")
        assert view.status == "checked" and view.checks_ok is True
        assert {c.name for c in view.checks} == {
            "builtins",
            "opa_check",
            "regorus",
            "well_formed_decisions",
            "rego_tests",
            "regorus_vm",
        }
        assert view.base_version == shipped and not view.active
        assert service.active_version() == shipped  # proposing decides nothing

        with pytest.raises(FourEyesViolation) as err:
            service.approve(proposed.version, actor=ALICE)
        assert err.value.code == "four_eyes_required" and err.value.status == 403
        assert service.get(proposed.version).status == "checked"

        with pytest.raises(PolicyStateConflict) as state:
            service.activate(proposed.version, actor=BOB)
        assert state.value.code == "policy_not_approved"

        clock.advance(minutes=1)
        approved = service.approve(hexv(proposed.version)[:12], actor=BOB)  # prefix works
        assert approved.status == "approved" and approved.approver == BOB
        assert service.active_version() == shipped

        clock.advance(minutes=1)
        active = service.activate(proposed.version, actor=BOB)
        assert active.status == "active" and active.active
        assert service.active_version() == proposed.version
        assert service.get(shipped).status == "retired"
        with pytest.raises(PolicyStateConflict) as again:
            service.activate(proposed.version, actor=BOB)
        assert again.value.code == "policy_active"

        clock.advance(minutes=1)
        back = service.rollback(actor=ALICE)
        assert back.version == shipped and back.status == "active"
        assert service.active_version() == shipped
        assert service.get(proposed.version).status == "rolled_back"
        with pytest.raises(NothingToRollBack):
            service.rollback(actor=ALICE)  # the bootstrap has nothing before it

        history = service.history()
        assert [(h.action, h.version) for h in history] == [
            ("rollback", shipped),
            ("activate", proposed.version),
            ("bootstrap", shipped),
        ]
        assert history[1].rollback_to == shipped
        assert history[0].rollback_to is None  # the bootstrap is the bottom of the stack

        events = policy_events(audit)
        assert [(e["outcome"], e["policy_version"], e["actor"]) for e in events] == [
            ("activated", hexv(shipped), "system:bootstrap"),
            ("proposed", hexv(proposed.version), ALICE),
            ("checked", hexv(proposed.version), ALICE),
            ("approved", hexv(proposed.version), BOB),
            ("activated", hexv(proposed.version), BOB),
            ("rolled_back", hexv(shipped), ALICE),
        ]
        assert events[0]["detail"]["bootstrap"] is True
        assert events[1]["detail"]["note"] == "suspend eligibility checks"
        assert events[3]["detail"]["proposer"] == ALICE
        assert events[4]["detail"]["previous_version"] == hexv(shipped)
        assert events[5]["detail"]["from_version"] == hexv(proposed.version)


BAD_BUNDLES: dict[str, tuple[dict[str, str], str, str]] = {
    "syntax_error": (
        {"exchange.rego": shipped_sources()["exchange.rego"] + "\nbroken := {\n"},
        "opa_check",
        "exchange.rego:",
    ),
    "failing_rego_test": (
        {"extra_test.rego": "package accord.extra_test\n\ntest_always_fails if {\n\tfalse\n}\n"},
        "rego_tests",
        "extra_test.rego:3: data.accord.extra_test.test_always_fails",
    ),
    "http_send": (
        {
            "remote.rego": (
                "package accord.exchange\n\nremote := http.send("
                '{"method": "get", "url": "http://127.0.0.1:9/"})\n'
            )
        },
        "builtins",
        "remote.rego:3: rego_type_error: undefined function http.send",
    ),
    "time_now": (
        {"clock.rego": "package accord.exchange\n\nnow_ns := time.now_ns()\n"},
        "builtins",
        "undefined function time.now_ns",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_BUNDLES))
def test_bad_bundle_refused_and_active_unchanged(sqlite_url: str, opa_bin: Path, kind: str) -> None:
    files, failing_check, named = BAD_BUNDLES[kind]
    with policy_store(sqlite_url, opa_bin) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        bad = bundle_with(files)
        with pytest.raises(PolicyRejected) as err:
            service.propose(bad, actor=ALICE)
        assert err.value.code == "policy_rejected" and err.value.status == 422
        assert named in err.value.detail
        assert err.value.extra["version"] == bad.version
        failed = {c["name"] for c in err.value.extra["checks"] if not c["ok"]}
        assert failing_check in failed
        stored = service.get(bad.version)
        assert stored.status == "rejected" and stored.checks_ok is False
        assert service.active_version() == shipped
        for step in (service.approve, service.activate):
            with pytest.raises(PolicyStateConflict):
                step(bad.version, actor=BOB)
        assert service.active_version() == shipped
        outcomes = [(e["outcome"], e["policy_version"]) for e in policy_events(audit)]
        assert outcomes[-1] == ("rejected", hexv(bad.version))
        assert failing_check in policy_events(audit)[-1]["detail"]["checks_failed"]


def test_step_rules(sqlite_url: str, opa_bin: Path) -> None:
    with policy_store(sqlite_url, None) as (unchecked, _, engine):
        unchecked.ensure_initial(POLICY_DIR)
        draft = unchecked.propose(suspend_bundle(), actor=ALICE)
        assert draft.status == "draft" and draft.checks_ok is None
        with pytest.raises(PolicyStateConflict) as err:
            unchecked.approve(draft.version, actor=BOB)
        assert err.value.code == "policy_not_checked"
        with pytest.raises(AccordError) as unavailable:
            unchecked.check(draft.version, actor=ALICE)
        assert unavailable.value.code == "policy_checks_unavailable"
        with pytest.raises(PolicyStateConflict) as dup:
            unchecked.propose(suspend_bundle(), actor=BOB)
        assert dup.value.code == "policy_exists"
        missing_binary = PolicyService(engine, audit=None, opa_bin=Path("/nonexistent/opa"))
        with pytest.raises(AccordError) as broken:
            missing_binary.check(draft.version, actor=ALICE)
        assert broken.value.code == "policy_checks_unavailable"
        # The same store with the checks available: the draft can now be checked.
        checked = PolicyService(engine, audit=unchecked.audit, opa_bin=opa_bin).check(
            draft.version, actor=ALICE
        )
        assert checked.status == "checked"
        rejected = unchecked.reject(draft.version, actor=BOB, reason="not now")
        assert rejected.status == "rejected" and rejected.rejected_by == BOB
        with pytest.raises(AccordError) as missing:
            unchecked.get("sha256:" + "0" * 64)
        assert missing.value.code == "policy_not_found"
        with pytest.raises(AccordError) as junk:
            unchecked.get("'; drop table policy_version; --")
        assert junk.value.code == "policy_not_found"


class FailingAudit:
    """The real audit log, except that every append fails (a full disk, a lost lock)."""

    def append(self, entry: dict[str, Any]) -> Any:
        raise RuntimeError("audit store unavailable")

    def append_in(self, conn: Any, entry: dict[str, Any]) -> Any:
        raise RuntimeError("audit store unavailable")


def test_failed_audit_append_aborts_every_step(db_url: str, opa_bin: Path) -> None:
    with policy_store(db_url, opa_bin) as (service, _, engine):
        shipped = service.ensure_initial(POLICY_DIR)
        good = suspend_bundle()
        service.propose(good, actor=ALICE)
        broken = PolicyService(engine, audit=FailingAudit(), opa_bin=opa_bin)
        other = bundle_with({"other_test.rego": "package other_test\n\ntest_ok if true\n"})
        with pytest.raises(RuntimeError):
            broken.propose(other, actor=ALICE)
        with pytest.raises(RuntimeError):
            broken.approve(good.version, actor=BOB)
        assert service.get(good.version).status == "checked"
        service.approve(good.version, actor=BOB)
        with pytest.raises(RuntimeError):
            broken.activate(good.version, actor=BOB)
        assert service.active_version() == shipped
        assert service.get(good.version).status == "approved"
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(PolicyVersion)).scalar_one()
        assert stored == 2  # the shipped bundle and `good`; `other` left nothing behind


def test_bootstrap_refuses_a_failing_shipped_bundle(sqlite_url: str, opa_bin: Path) -> None:
    bad_dir = Path(sqlite_url.removeprefix("sqlite:///")).parent / "bad-policies"
    bad_dir.mkdir()
    for path, text in shipped_sources().items():
        (bad_dir / path).write_text(text, encoding="utf-8")
    (bad_dir / "net.rego").write_text(
        'package accord.exchange\n\nx := http.send({"method": "get", "url": "http://x"})\n',
        encoding="utf-8",
    )
    with policy_store(sqlite_url, opa_bin) as (service, audit, _):
        with pytest.raises(PolicyRejected):
            service.ensure_initial(bad_dir)
        assert service.active_version() is None
        assert policy_events(audit) == []


def test_concurrent_activations_are_serialised(db_url: str, opa_bin: Path) -> None:
    """Two officers activate different versions at the same moment from two nodes:
    the steps happen one after the other, never interleaved, so the second sees the
    first's activation and refuses its own change, proposed on the same base."""
    with policy_store(db_url, opa_bin) as (node_a, audit, engine):
        shipped = node_a.ensure_initial(POLICY_DIR)
        node_b = PolicyService(engine, audit=node_a.audit, opa_bin=None)
        first, second = (
            bundle_with({f"v{i}_test.rego": f"package v{i}_test\n\ntest_ok if true\n"})
            for i in (1, 2)
        )
        for b in (first, second):
            node_a.propose(b, actor=ALICE)
            node_a.approve(b.version, actor=BOB)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def activate(service: PolicyService, version: str) -> None:
            barrier.wait()
            try:
                service.activate(version, actor=BOB)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=activate, args=(node_a, first.version)),
            threading.Thread(target=activate, args=(node_b, second.version)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(errors) == 1 and isinstance(errors[0], PolicyStateConflict)
        assert errors[0].code == "policy_base_stale"
        history = node_a.history()
        assert [h.action for h in history] == ["activate", "bootstrap"]
        winner = history[0].version
        (loser,) = {first.version, second.version} - {winner}
        assert errors[0].extra["active_version"] == winner
        assert history[0].rollback_to == shipped
        assert node_a.active_version() == winner
        assert [v.version for v in node_a.list(status="active")] == [winner]
        assert node_a.get(loser).status == "approved"
        activated = [e for e in policy_events(audit) if e["outcome"] == "activated"]
        assert [e["detail"].get("previous_version") for e in activated[1:]] == [hexv(shipped)]
