"""A truncated impact dry-run replays the most recent decisions of the window (the
traffic the proposal would meet), oldest of those first, and says which."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.policy.embedded import EmbeddedEngine
from tests.policies.conftest import POLICY_DIR
from tests.policies.harness import base_input
from tests.policies.workflow_support import T0, Clock, patched, policy_store, suspend_bundle

pytestmark = pytest.mark.opa


async def test_truncated_impact_replays_the_most_recent_decisions(
    sqlite_url: str, opa_bin: Path
) -> None:
    clock = Clock()
    with policy_store(sqlite_url, opa_bin, clock) as (service, _audit, _):
        service.ensure_initial(POLICY_DIR)
        active = service.active_bundle()
        assert active is not None
        engine = EmbeddedEngine(timeout_ms=5000)
        try:
            await engine.load(active)
            for i in range(5):  # every one allowed today, denied by the proposal
                clock.advance(minutes=10)
                doc = patched(base_input(), agreement__id="agr-2", usage__day=i)
                service.record_decision(
                    exchange_id=f"x-{i}", policy_input=doc, decision=await engine.decide(doc)
                )
        finally:
            await engine.close()
        proposed = suspend_bundle()
        service.propose(proposed, actor="user:alice")

        report = service.impact(proposed.version, actor="user:bob", days=1, limit=3)
        assert report.truncated and report.replayed == 3 and report.allow_to_deny == 3
        assert report.groups[0].exchanges == ["x-2", "x-3", "x-4"]
        assert report.first_decided_at == T0 + timedelta(minutes=30)
        assert report.last_decided_at == T0 + timedelta(minutes=50)

        whole = service.impact(proposed.version, actor="user:bob", days=1, limit=10)
        assert not whole.truncated and whole.replayed == 5
        assert whole.groups[0].exchanges == ["x-0", "x-1", "x-2", "x-3", "x-4"]
        stored = service.get(proposed.version).impact
        assert stored is not None and stored["truncated"] is False
