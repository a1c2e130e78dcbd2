"""Invariant 4 under any order of steps: whatever officers try, in whatever order,
the active version was approved by someone other than its proposer (or is the
shipped bootstrap), exactly one version is active, and every step that changed
something left exactly one audit entry while every refused step left none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import AccordError, ValidationFailed
from gateway.policy.bundle import PolicyBundle
from tests.policies.conftest import POLICY_DIR
from tests.policies.workflow_support import bundle_with, policy_events, policy_store

pytestmark = pytest.mark.opa

OFFICERS = ("user:alice", "user:bob", "user:carol")
BUNDLES = [
    bundle_with({f"extra{i}_test.rego": f"package extra{i}_test\n\ntest_ok if true\n"})
    for i in range(3)
]
STEPS = st.tuples(
    st.sampled_from(["propose", "approve", "activate", "rollback", "reject"]),
    st.sampled_from(OFFICERS),
    st.integers(0, len(BUNDLES) - 1),
)


@settings(
    max_examples=int(os.environ.get("ACCORD_WORKFLOW_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEPS, min_size=1, max_size=10))
def test_any_sequence_keeps_four_eyes_and_the_audit_trail(
    tmp_path_factory: pytest.TempPathFactory, opa_bin: Path, steps: list[tuple[str, str, int]]
) -> None:
    db = tmp_path_factory.mktemp("wf") / "accord.db"
    with policy_store(f"sqlite:///{db}", opa_bin) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        expected_events = 1
        for op, actor, index in steps:
            version = BUNDLES[index].version
            before = (service.active_version(), len(policy_events(audit)))
            refused: AccordError | None = None
            try:
                if op == "propose":
                    service.propose(BUNDLES[index], actor=actor)
                    expected_events += 2  # proposed + checked
                elif op == "approve":
                    service.approve(version, actor=actor)
                    expected_events += 1
                elif op == "activate":
                    service.activate(version, actor=actor)
                    expected_events += 1
                elif op == "rollback":
                    service.rollback(actor=actor)
                    expected_events += 1
                else:
                    service.reject(version, actor=actor, reason="not this one")
                    expected_events += 1
            except AccordError as exc:
                refused = exc
            if refused is not None:
                assert refused.status in (403, 404, 409), refused
                assert (service.active_version(), len(policy_events(audit))) == before

            events = policy_events(audit)
            assert len(events) == expected_events
            active = service.active_version()
            assert active is not None
            row = service.get(active)
            assert row.status == "active"
            assert [v.version for v in service.list(status="active")] == [active]
            if active != shipped:
                assert row.approver is not None and row.approver != row.proposer
                assert row.checks_ok is True


def test_lone_surrogates_are_refused_as_input() -> None:
    with pytest.raises(ValidationFailed):
        PolicyBundle.from_sources({"exchange.rego": "package x\n# \ud800\n"})
