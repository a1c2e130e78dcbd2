"""The ``well_formed_decisions`` check: a version whose decision is undefined or
malformed never reaches ``checked`` (once active it would fail every exchange
closed), and a check that did not run is never reported or audited as passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.bundle import PolicyBundle
from gateway.policy.checks import PolicyRejected, check_bundle
from gateway.policy.engine import Decision
from tests.policies.conftest import POLICY_DIR
from tests.policies.harness import base_input
from tests.policies.workflow_support import (
    bundle_with,
    patched,
    policy_events,
    policy_store,
    shipped_sources,
)

pytestmark = pytest.mark.opa

TRIVIAL_TEST = "package accord.trivial_test\n\ntest_trivial if true\n"
DECISIONS = {
    "undefined_for_every_input": (
        'decision := {"allow": true, "deny": [], "obligations": {}, "level": null} if {\n'
        '\tinput.never_there == "x"\n}\n'
    ),
    "allow_is_a_string": (
        'decision := {"allow": "yes", "deny": [], "obligations": {}, "level": null}\n'
    ),
    "decision_is_a_string": 'decision := "allow"\n',
    "deny_without_reason": (
        'decision := {"allow": false, "deny": [], "obligations": {}, "level": null}\n'
    ),
}


def lone_decision(rule: str) -> PolicyBundle:
    return PolicyBundle.from_sources(
        {"exchange.rego": "package accord.exchange\n\n" + rule, "trivial_test.rego": TRIVIAL_TEST}
    )


@pytest.mark.parametrize("kind", sorted(DECISIONS))
def test_undefined_or_malformed_decision_is_rejected(
    sqlite_url: str, opa_bin: Path, kind: str
) -> None:
    bundle = lone_decision(DECISIONS[kind])
    with policy_store(sqlite_url, opa_bin) as (service, audit, _):
        shipped = service.ensure_initial(POLICY_DIR)
        with pytest.raises(PolicyRejected) as err:
            service.propose(bundle, actor="user:alice")
        assert "well_formed_decisions: " in err.value.detail
        assert "probe 0 (base input)" in err.value.detail
        stored = service.get(bundle.version)
        assert stored.status == "rejected"
        check = {c.name: c for c in stored.checks}["well_formed_decisions"]
        assert check.status == "failed" and not check.ok
        # The other checks say nothing against it: this one is what stops it.
        assert {c.name for c in stored.checks if c.ok} >= {"regorus", "rego_tests"}
        assert service.active_version() == shipped
        last = policy_events(audit)[-1]
        assert last["outcome"] == "rejected"
        assert "well_formed_decisions" in last["detail"]["checks_failed"]


def test_shipped_policy_has_well_formed_decisions(opa_bin: Path) -> None:
    check = {c.name: c for c in check_bundle(bundle_with(), opa_bin).checks}
    decisions = check["well_formed_decisions"]
    assert decisions.ok and decisions.outcome == "passed"
    assert decisions.detail.startswith("a well-formed decision for all ")


def test_a_recorded_input_the_version_cannot_decide_fails_the_check(
    sqlite_url: str, opa_bin: Path
) -> None:
    """The traffic the gateway sees is probed too: a version undefined only for a
    dataset no synthetic probe names passes on the probes alone, and is refused
    once the decision log holds such a request."""
    shipped = shipped_sources()["exchange.rego"]
    gap = shipped.replace(
        '\t"level": decision_level,\n}\n',
        '\t"level": decision_level,\n} if not input.request.dataset == "vehicle@7"\n',
        1,
    )
    assert gap != shipped
    bundle = bundle_with(exchange_rego=gap)
    alone = {c.name: c for c in check_bundle(bundle, opa_bin).checks}
    assert alone["well_formed_decisions"].ok
    doc = patched(base_input(), request__dataset="vehicle@7")
    denied = Decision.error("recorded under an outage", policy_version=None)
    with policy_store(sqlite_url, opa_bin) as (service, _, _engine):
        service.ensure_initial(POLICY_DIR)
        service.record_decision(exchange_id="x-vehicle", policy_input=doc, decision=denied)
        with pytest.raises(PolicyRejected) as err:
            service.propose(bundle, actor="user:alice")
        assert "decision undefined on probe" in err.value.detail
        assert "recorded input of exchange x-vehicle" in err.value.detail


def test_skipped_checks_are_not_reported_or_audited_as_passed(
    sqlite_url: str, opa_bin: Path
) -> None:
    syntax = bundle_with({"exchange.rego": "package accord.exchange\n\nx := {\n"})
    report = check_bundle(syntax, opa_bin)
    by_name = {c.name: c for c in report.checks}
    for name in ("regorus_vm", "well_formed_decisions"):
        assert by_name[name].outcome == "skipped" and not by_name[name].ok
        assert by_name[name].to_json()["status"] == "skipped"
    assert by_name["regorus"].outcome == "failed" and not report.ok
    with policy_store(sqlite_url, opa_bin) as (service, audit, _):
        service.ensure_initial(POLICY_DIR)
        with pytest.raises(PolicyRejected):
            service.propose(syntax, actor="user:alice")
        detail = policy_events(audit)[-1]["detail"]
        assert "regorus_vm" not in detail["checks_passed"]
        assert sorted(detail["checks_skipped"]) == [
            "rego_tests",  # OPA runs no test of a bundle the builtins check refused
            "regorus_vm",
            "well_formed_decisions",
        ]
        assert "regorus" in detail["checks_failed"]
        shown = {c.name: c.status for c in service.get(syntax.version).checks}
        assert shown["regorus_vm"] == "skipped"


def test_decision_allow_shape_is_the_engine_parser() -> None:
    """The check and the exchange share one definition of a usable decision."""
    from gateway.policy.engine import decision_from_value, decision_problem

    good = {"allow": True, "deny": [], "obligations": {"given_name": {"operation": "pass"}}}
    good["level"] = None
    assert decision_problem(good) is None
    parsed = decision_from_value(good, policy_version="v1", engine="embedded")
    assert parsed.allow and not parsed.is_error
    assert parsed.obligations == {"given_name": {"operation": "pass"}}
    assert (parsed.policy_version, parsed.engine) == ("v1", "embedded")
    for bad in (None, "allow", {**good, "allow": "yes"}, {**good, "allow": False}):
        assert decision_problem(bad) is not None
        assert decision_from_value(bad, policy_version=None, engine="").is_error
