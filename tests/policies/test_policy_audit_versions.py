"""Every policy version a ``policy_change`` entry names is written one way: 64 hex digits.

The entry's ``policy_version`` (like an exchange entry's) is the bare hex the
closed schema allows; the versions in ``detail`` (base, previous, rolled back
from, passed over, dry-run baseline) used to keep the ``sha256:`` prefix, so an
auditor matching an activation to the proposal it came from compared two
spellings of the same version.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.policy.audited import VERSION_DETAIL
from tests.policies.conftest import POLICY_DIR
from tests.policies.workflow_support import (
    Clock,
    bundle_with,
    hexv,
    policy_events,
    policy_store,
)

pytestmark = pytest.mark.opa

ALICE, BOB, CAROL = "user:alice", "user:bob", "user:carol"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
ROOT = Path(__file__).resolve().parents[2]


def test_policy_change_entries_name_versions_as_bare_hex(db_url: str, opa_bin: Path) -> None:
    with policy_store(db_url, opa_bin, Clock()) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        v1, v2 = (
            bundle_with({f"v{i}_test.rego": f"package v{i}_test\n\ntest_ok if true\n"})
            for i in (1, 2)
        )
        for b in (v1, v2):
            service.propose(b, actor=ALICE, note=f"change {b.version}")
            service.impact(b.version, actor=BOB, days=7)
            service.approve(b.version, actor=BOB)
            service.activate(b.version, actor=BOB)
        service.reject(v1.version, actor=CAROL, reason="found a flaw")
        service.rollback(actor=ALICE)  # from v2 over the rejected v1 to the shipped bundle

        events = policy_events(audit)
        by_outcome: dict[str, list[dict[str, object]]] = {}
        for e in events:
            by_outcome.setdefault(str(e["outcome"]), []).append(e["detail"])
            for key, value in e["detail"].items():
                if key in VERSION_DETAIL:
                    for v in value if isinstance(value, list) else [value]:
                        assert HEX64.match(v), (e["outcome"], key, v)
            assert HEX64.match(e["policy_version"])

        proposed, assessed = by_outcome["proposed"], by_outcome["impact_assessed"]
        assert [d["base_version"] for d in proposed] == [hexv(shipped), hexv(v1.version)]
        assert [d["baseline"] for d in assessed] == [hexv(shipped), hexv(v1.version)]
        activated = by_outcome["activated"][1:]  # after the bootstrap
        assert [d["previous_version"] for d in activated] == [hexv(shipped), hexv(v1.version)]
        assert [d["base_version"] for d in activated] == [hexv(shipped), hexv(v1.version)]
        (rolled_back,) = by_outcome["rolled_back"]
        assert rolled_back["from_version"] == hexv(v2.version)
        assert rolled_back["passed_over"] == [hexv(v1.version)]
        # The officer's own text is kept as written, prefix and all.
        assert proposed[0]["note"] == f"change {v1.version}"
        # No other field of any entry spells a version the API's way.
        spelled = [
            (e["outcome"], k)
            for e in events
            for k, v in e["detail"].items()
            if k != "note" and "sha256:" in str(v)
        ]
        assert spelled == []


def test_audit_docs_name_every_version_field() -> None:
    docs = (ROOT / "docs/audit.md").read_text(encoding="utf-8")
    assert "without the `sha256:` prefix" in docs
    assert {k for k in VERSION_DETAIL if f"`{k}`" not in docs} == set()
