"""The probe inputs of the VM self-check: deterministic, schema-based, and reaching
every rule of the shipped policy; recorded inputs come newest first, distinct, capped."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.agreements.models import STATUSES
from gateway.policy._regorus import new_interpreter, run_interpreter
from gateway.policy.bundle import PolicyBundle
from gateway.policy.engine import DENY_CODES, Decision
from gateway.policy.input import verify_policy_input
from gateway.policy.probes import base_probe_input, recorded_probes, synthetic_probes
from tests.policies.harness import base_input
from tests.policies.workflow_support import patched, policy_store


def test_base_probe_is_a_valid_allowed_input(shipped_bundle: PolicyBundle) -> None:
    verify_policy_input(base_probe_input())
    engine = new_interpreter(tuple(shipped_bundle.policy_sources().items()))
    value = run_interpreter(engine, json.dumps(base_probe_input()))
    assert value["allow"] is True and value["deny"] == []
    del engine


def test_probes_are_deterministic_and_distinct() -> None:
    probes = synthetic_probes()
    assert 300 <= len(probes) <= 1000
    assert len({p.payload for p in probes}) == len(probes)
    synthetic_probes.cache_clear()
    again = synthetic_probes()
    assert again == probes and again is not probes


def test_probes_reach_every_deny_code_and_every_line(shipped_bundle: PolicyBundle) -> None:
    """If a rule is never evaluated, the VM self-check says nothing about it."""
    engine = new_interpreter(tuple(shipped_bundle.policy_sources().items()))
    engine.set_enable_coverage(True)
    codes: set[str] = set()
    allowed = 0
    for probe in synthetic_probes():
        try:
            value = run_interpreter(engine, probe.payload)
        except RuntimeError:  # the interpreter's own gaps; the VM is checked against them
            continue
        allowed += value["allow"] is True
        codes |= {r["code"] for r in value["deny"]}
    report = json.loads(engine.get_coverage_report_as_json())
    del engine
    assert codes == DENY_CODES - {"policy_error"}
    assert allowed >= 50
    missed = {f["path"]: f["not_covered"] for f in report["files"] if f["not_covered"]}
    assert missed == {}


def test_recorded_probes_newest_first_distinct_capped(sqlite_url: str, tmp_path: Path) -> None:
    docs = [patched(base_input(), usage__day=day) for day in (1, 2, 1, 3, 3)]
    allow = Decision(True, (), {}, "internal", "sha256:x")
    with policy_store(sqlite_url, None) as (service, _, engine):
        assert recorded_probes(engine) == []
        for i, doc in enumerate(docs):
            service.record_decision(exchange_id=f"ex-{i}", policy_input=doc, decision=allow)
        probes = recorded_probes(engine)
        assert [p.label for p in probes] == [
            "recorded input of exchange ex-4",
            "recorded input of exchange ex-2",
            "recorded input of exchange ex-1",
        ]
        assert [json.loads(p.payload)["usage"]["day"] for p in probes] == [3, 1, 2]
        assert len(recorded_probes(engine, limit=2)) == 2


def test_every_agreement_status_the_gateway_stores_is_valid_input() -> None:
    """An exchange naming a version in any stored status (one superseded, say) is an
    input the schema admits, so a recorded decision about it is a probe like any other."""
    for status in STATUSES:
        doc = base_probe_input()
        doc["agreement"]["status"] = status
        verify_policy_input(doc)
