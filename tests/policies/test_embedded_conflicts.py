"""Rego conflicts fail closed on the embedded engine's VM exactly as on the real OPA server.

A complete rule, function or object key that yields two values for one input
is OPA's ``eval_conflict_error`` (a 503 ``policy_error``). regorus' VM used to
answer such a rule as undefined (or keep one value), and undefined under
``not`` / ``default`` / an object key released what OPA refused. Each policy
below is well formed and allows on the plain request; it conflicts only on a
rare input that no synthetic probe has, so the VM self-check alone never saw it.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy.bundle import PolicyBundle
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.engine import Decision
from gateway.policy.opa import OpaEngine
from gateway.policy.probes import Probe
from tests.policies.harness import base_input
from tests.policies.workflow_support import patched

pytestmark = pytest.mark.opa

RARE = patched(base_input(), request__purpose="conflict-7")
ALLOW = (
    'decision := {"allow": true, "deny": [], "level": null,\n'
    '\t"obligations": {"name": {"operation": operation}}}'
)
HEADER = "package accord.exchange\n\n"

CONFLICTING = {
    # A complete rule with two definitions, read under `not`.
    "complete_rule_under_not": HEADER
    + 'operation := "pass"\n\n'
    + 'blocked := true if input.request.purpose == "conflict-7"\n\n'
    + 'blocked := false if input.request.purpose in {"conflict-7", "other"}\n\n'
    + f"{ALLOW} if not blocked\n",
    # A default plus two definitions that disagree.
    "complete_rule_with_default": HEADER
    + 'operation := "pass"\n\n'
    + "default blocked := false\n\n"
    + 'blocked := true if input.request.purpose == "conflict-7"\n\n'
    + 'blocked := false if input.request.purpose in {"conflict-7", "other"}\n\n'
    + f"{ALLOW} if not blocked\n",
    # One definition whose body has two solutions with different values.
    "complete_rule_two_solutions": HEADER
    + 'operation := "pass"\n\n'
    + 'restricted := r if {\n\tinput.request.purpose == "conflict-7"\n'
    + "\tsome r in [true, false]\n}\n\n"
    + f"{ALLOW} if not restricted\n",
    # Two object rules giving one key two values.
    "object_key_two_values": HEADER
    + 'ops[name] := "pass" if some name, _ in input.request.fields\n\n'
    + 'ops[name] := "redact" if {\n\tinput.request.purpose == "conflict-7"\n'
    + "\tsome name, _ in input.request.fields\n}\n\n"
    + "operation := ops.name\n\n"
    + f"{ALLOW}\n",
    # A function defined twice with different values: no guard can see every call.
    "function_two_definitions": HEADER
    + 'operation := "pass"\n\n'
    + 'restricted(purpose) := true if purpose == "conflict-7"\n\n'
    + 'restricted(purpose) := false if purpose in {"conflict-7", "other"}\n\n'
    + f"{ALLOW} if not restricted(input.request.purpose)\n",
}


def bundle(text: str) -> PolicyBundle:
    return PolicyBundle.from_sources({"exchange.rego": text})


async def decide_both(url: str, b: PolicyBundle, doc: dict[str, Any]) -> list[Decision]:
    decisions = []
    for engine in (EmbeddedEngine(timeout_ms=5000), await OpaEngine.connect(url, timeout_ms=5000)):
        try:
            await engine.load(b)
            decisions.append(await engine.decide(doc))
        finally:
            await engine.close()
    return decisions


@pytest.mark.parametrize("kind", sorted(CONFLICTING))
async def test_rego_conflict_on_a_rare_input_fails_closed_as_on_opa(
    scratch_opa_url: str, kind: str
) -> None:
    b = bundle(CONFLICTING[kind])
    # Control: the plain request is allowed by both, with the field released.
    for plain in await decide_both(scratch_opa_url, b, base_input()):
        assert plain.allow, (kind, plain)
        assert dict(plain.obligations["name"]) == {"operation": "pass"}
    # The rare input: OPA raises eval_conflict_error, the embedded engine (its VM
    # by default) must release nothing either.
    embedded, opa = await decide_both(scratch_opa_url, b, RARE)
    assert opa.codes == ("policy_error",) and not opa.allow, opa
    assert embedded.codes == ("policy_error",), (kind, embedded.to_json())
    assert not embedded.allow and embedded.obligations == {}


async def test_guarded_conflicts_keep_the_version_on_the_vm() -> None:
    """The guards do not cost the VM the version: the conflict is caught per input."""
    engine = EmbeddedEngine(timeout_ms=5000, isolation="inline")
    try:
        await engine.load(bundle(CONFLICTING["object_key_two_values"]))
        assert engine.mode == "vm", engine.mode_reason
        assert (await engine.decide(base_input())).allow
        assert (await engine.decide(RARE)).codes == ("policy_error",)
        assert engine._inline_vm is not None  # the plain request was decided inline
    finally:
        await engine.close()


async def test_unguardable_function_conflict_is_interpreted_on_every_load() -> None:
    b = bundle(CONFLICTING["function_two_definitions"])
    for _ in range(2):
        engine = EmbeddedEngine(timeout_ms=5000)
        try:
            await engine.load(b)
            assert engine.mode == "interpreter"
            assert "may yield conflicting values" in engine.mode_reason
            assert "accord.exchange.restricted" in engine.mode_reason
        finally:
            await engine.close()


async def test_a_version_once_interpreted_is_not_moved_back_to_the_vm_on_reload() -> None:
    # The VM answers this body wrong only where the recorded input reaches it
    # (an absent path assigned, then negated), so the self-check sees it only
    # with that recorded probe; a later reload without it must not return the
    # version to the VM and change its decisions.
    text = HEADER + (
        'operation := "pass"\n\n'
        'odd if {\n\tinput.request.purpose == "conflict-7"\n'
        "\tc := input.request.query.cohort_size\n\tnot is_number(c)\n}\n\n"
        f"{ALLOW} if not odd\n"
    )
    b = bundle(text)
    recorded = Probe("recorded", '{"request": {"purpose": "conflict-7"}}')
    engine = EmbeddedEngine(timeout_ms=5000)
    try:
        await engine.load(b, probes=[recorded])
        assert engine.mode == "interpreter", engine.mode_reason
        first = engine.mode_reason
        await engine.load(b, probes=[])
        assert engine.mode == "interpreter" and engine.mode_reason == first
    finally:
        await engine.close()
