"""The impact dry-run: recorded decision inputs replayed through a proposed version
show exactly which decisions would change, grouped by agreement and reason."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.errors import AccordError
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.engine import Decision
from gateway.policy.impact import Outcome, ReplayedRecord, group_changes
from tests.policies.conftest import POLICY_DIR
from tests.policies.harness import base_input, load_corpus
from tests.policies.workflow_support import (
    Clock,
    patched,
    policy_events,
    policy_store,
    suspend_bundle,
)

pytestmark = pytest.mark.opa


async def test_impact_reports_exactly_the_changed_decisions(db_url: str, opa_bin: Path) -> None:
    clock = Clock()
    with policy_store(db_url, opa_bin, clock) as (service, audit, _):
        service.ensure_initial(POLICY_DIR)
        engine = EmbeddedEngine(timeout_ms=5000)
        try:
            active = service.active_bundle()
            assert active is not None
            await engine.load(active)
            # Six weeks ago: outside a 30-day window, so never replayed.
            clock.advance(days=-42)
            old = patched(base_input(), agreement__id="agr-2")
            service.record_decision(
                exchange_id="x-old", policy_input=old, decision=await engine.decide(old)
            )
            clock.advance(days=42)
            for case in load_corpus():
                service.record_decision(
                    exchange_id=f"x-{case.name}",
                    policy_input=case.input,
                    decision=await engine.decide(case.input),
                )
            for i in range(3):  # allowed today, denied by the proposal
                doc = patched(base_input(), agreement__id="agr-2", usage__day=i)
                decision = await engine.decide(doc)
                assert decision.allow
                service.record_decision(
                    exchange_id=f"x-agr2-{i}", policy_input=doc, decision=decision
                )
            # Already denied for another reason: the proposal adds a reason, not a denial.
            quota = patched(base_input(), agreement__id="agr-2", usage__day=5000)
            service.record_decision(
                exchange_id="x-agr2-quota", policy_input=quota, decision=await engine.decide(quota)
            )
            # An outage was recorded as policy_error; replay compares versions, not outages.
            outage = base_input()
            service.record_decision(
                exchange_id="x-outage",
                policy_input=outage,
                decision=Decision.error("OPA unreachable", policy_version=active.version),
            )
        finally:
            await engine.close()

        proposed = suspend_bundle()
        service.propose(proposed, actor="user:alice")
        report = service.impact(proposed.version, actor="user:bob", days=30)

        assert report.version == proposed.version and report.baseline == active.version
        assert report.replayed == len(load_corpus()) + 5
        assert report.changed == 4
        assert (report.allow_to_deny, report.deny_to_allow, report.errors) == (3, 0, 0)
        assert not report.truncated
        groups = [(g.agreement, g.change, g.reasons_added, g.count) for g in report.groups]
        assert groups == [
            ("agr-2@1", "allow_to_deny", ["purpose_not_permitted"], 3),
            ("agr-2@1", "reasons_changed", ["purpose_not_permitted"], 1),
        ]
        assert report.groups[0].exchanges == ["x-agr2-0", "x-agr2-1", "x-agr2-2"]
        assert report.groups[1].exchanges == ["x-agr2-quota"]

        stored = service.get(proposed.version)
        assert stored.impact is not None and stored.impact["changed"] == 4
        service.approve(proposed.version, actor="user:bob")
        events = policy_events(audit)
        assessed = [e for e in events if e["outcome"] == "impact_assessed"]
        assert len(assessed) == 1 and assessed[0]["detail"]["allow_to_deny"] == 3
        assert events[-1]["outcome"] == "approved"
        assert events[-1]["detail"]["impact_changed"] == 4

        # Limits are explicit: a too-small limit says the report is partial.
        partial = service.impact(proposed.version, actor="user:bob", days=30, limit=2)
        assert partial.truncated and partial.replayed == 2


def test_impact_needs_a_checked_version(sqlite_url: str) -> None:
    with policy_store(sqlite_url, None) as (service, _, _):
        service.ensure_initial(POLICY_DIR)
        draft = service.propose(suspend_bundle(), actor="user:alice")
        with pytest.raises(AccordError) as err:
            service.impact(draft.version, actor="user:bob")
        assert err.value.code == "policy_not_checked"
        with pytest.raises(AccordError) as bad:
            service.impact(draft.version, actor="user:bob", days=0)
        assert bad.value.code == "validation_failed"


def test_prune_decisions_keeps_the_window(sqlite_url: str) -> None:
    clock = Clock()
    with policy_store(sqlite_url, None, clock) as (service, _, _):
        doc = base_input()
        error = Decision.error("x", policy_version=None)
        service.record_decision(exchange_id="a", policy_input=doc, decision=error)
        clock.advance(days=10)
        service.record_decision(exchange_id="b", policy_input=doc, decision=error)
        assert service.prune_decisions(before=clock.now - timedelta(days=5)) == 1
        assert service.prune_decisions(before=clock.now - timedelta(days=5)) == 0


def _outcome(allow: bool, codes: tuple[str, ...] = (), obligations: str = "{}") -> Outcome:
    return Outcome(allow, codes, obligations, "internal" if allow else None)


def test_grouping_names_fields_whose_operation_changes() -> None:
    before = _outcome(True, obligations='{"a": {"operation": "pass"}, "b": {"operation": "pass"}}')
    after = _outcome(True, obligations='{"a": {"operation": "mask"}, "b": {"operation": "pass"}}')
    records = [
        ReplayedRecord("x1", "agr-1@1", before, after),
        ReplayedRecord("x2", "agr-1@1", before, after),
        ReplayedRecord("x3", None, _outcome(False, ("quota_exceeded",)), _outcome(True)),
        ReplayedRecord("x4", "agr-1@1", before, before),
    ]
    groups = group_changes(records)
    assert [(g.agreement, g.change, g.fields_changed, g.count) for g in groups] == [
        ("agr-1@1", "obligations_changed", ["a"], 2),
        ("(none)", "deny_to_allow", [], 1),
    ]
    assert groups[1].reasons_removed == ["quota_exceeded"]
