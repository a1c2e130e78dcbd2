"""Fail closed: every way of not getting a well-formed decision is a
``policy_error`` deny, on both engines, never an allow."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.errors import PolicyError
from gateway.policy.bundle import PolicyBundle
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.engine import Decision, DenyReason, PolicyDenied, PolicyEngine
from gateway.policy.opa import OpaEngine
from tests._support.servers import free_port
from tests.policies.harness import base_input

pytestmark = pytest.mark.opa

ALLOW_ALL = (
    'package accord.exchange\n\ndecision := {"allow": true, "deny": [], '
    '"obligations": {"name": {"operation": "pass"}}, "level": "public"}\n'
)
BROKEN = {
    "undefined": "package accord.exchange\n\ndecision := 1 if false\n",
    "not_an_object": "package accord.exchange\n\ndecision := 1\n",
    "allow_not_bool": (
        'package accord.exchange\n\ndecision := {"allow": "yes", "deny": [], '
        '"obligations": {}, "level": null}\n'
    ),
    "allow_with_reasons": (
        'package accord.exchange\n\ndecision := {"allow": true, "deny": [{"code": "x", '
        '"message": "y"}], "obligations": {}, "level": null}\n'
    ),
    "deny_without_reason": (
        'package accord.exchange\n\ndecision := {"allow": false, "deny": [], '
        '"obligations": {}, "level": null}\n'
    ),
    "bad_obligation": (
        'package accord.exchange\n\ndecision := {"allow": true, "deny": [], '
        '"obligations": {"name": "pass"}, "level": null}\n'
    ),
    "conflict": "package accord.exchange\n\ndecision := 1 if input.a\n\ndecision := 2 if input.a\n",
}


def bundle(text: str) -> PolicyBundle:
    return PolicyBundle.from_sources({"exchange.rego": text})


async def engines_for(url: str) -> list[PolicyEngine]:
    return [EmbeddedEngine(timeout_ms=2000), await OpaEngine.connect(url, timeout_ms=2000)]


@pytest.mark.parametrize("kind", sorted(BROKEN))
async def test_malformed_decision_is_policy_error(scratch_opa_url: str, kind: str) -> None:
    b = bundle(BROKEN[kind])
    for engine in await engines_for(scratch_opa_url):
        try:
            await engine.load(b)
            d = await engine.decide({"a": True})
            assert not d.allow
            assert d.codes == ("policy_error",), engine.name
            assert d.is_error
            assert d.obligations == {}
            with pytest.raises(PolicyError):
                d.verify_allowed()
        finally:
            await engine.close()


async def test_allow_all_policy_is_honoured_on_both(scratch_opa_url: str) -> None:
    """Control for the test above: the same harness does see an allow."""
    for engine in await engines_for(scratch_opa_url):
        try:
            await engine.load(bundle(ALLOW_ALL))
            d = await engine.decide({})
            assert d.allow and d.policy_version == bundle(ALLOW_ALL).version
            assert dict(d.obligations["name"]) == {"operation": "pass"}
            d.verify_allowed()
        finally:
            await engine.close()


async def test_no_policy_loaded_denies(scratch_opa_url: str) -> None:
    for engine in await engines_for(scratch_opa_url):
        try:
            d = await engine.decide(base_input())
            assert d.codes == ("policy_error",)
            assert not (await engine.health()).ok
        finally:
            await engine.close()


async def test_unreachable_opa_fails_closed(shipped_bundle: PolicyBundle) -> None:
    engine = await OpaEngine.connect(f"http://127.0.0.1:{free_port()}", timeout_ms=300)
    try:
        with pytest.raises(PolicyError):
            await engine.load(shipped_bundle)
        assert engine.version is None
        assert (await engine.decide(base_input())).codes == ("policy_error",)
        health = await engine.health()
        assert not health.ok and "unreachable" in health.detail
    finally:
        await engine.close()


async def test_opa_becomes_unreachable_after_load(shipped_bundle: PolicyBundle) -> None:
    from tests._support.servers import opa_server

    with opa_server() as url:
        engine = await OpaEngine.connect(url, timeout_ms=500)
        await engine.load(shipped_bundle)
        assert (await engine.decide(base_input())).allow
    try:
        d = await engine.decide(base_input())
        assert d.codes == ("policy_error",)
    finally:
        await engine.close()


async def test_embedded_timeout_is_policy_error() -> None:
    slow = (
        "package accord.exchange\n\ndecision := count([x | some x in numbers.range(1, 3000000)])\n"
    )
    engine = EmbeddedEngine(timeout_ms=1)
    try:
        await engine.load(bundle("package accord.exchange\n\ndecision := 1 if input.never\n"))
        assert engine._loaded is not None  # skip the load probe: replace what was loaded
        engine._loaded = replace(
            engine._loaded,
            version="sha256:slow",
            sources=(("exchange.rego", slow),),
            program=None,
            mode="interpreter",
        )
        d = await engine.decide({})
        assert d.codes == ("policy_error",)
        assert "timeout" in d.deny[0].message
    finally:
        await engine.close()


async def test_v0_rego_is_refused_not_upgraded(scratch_opa_url: str) -> None:
    """rego_compat=False: OPA must refuse v0 syntax rather than the client rewriting it."""
    v0 = 'package accord.exchange\n\ndecision = {"allow": true} { true }\n'
    for engine in await engines_for(scratch_opa_url):
        try:
            with pytest.raises(PolicyError):
                await engine.load(bundle(v0))
            assert engine.version is None or engine.name == "embedded"
        finally:
            await engine.close()


async def test_health_detects_policy_replaced_behind_our_back(
    scratch_opa_url: str, shipped_bundle: PolicyBundle
) -> None:
    engine = await OpaEngine.connect(scratch_opa_url)
    other = await OpaEngine.connect(scratch_opa_url)
    try:
        await engine.load(shipped_bundle)
        assert (await engine.health()).ok
        await other.load(bundle(ALLOW_ALL))
        assert not (await engine.health()).ok
    finally:
        await engine.close()
        await other.close()


def test_decision_invariants() -> None:
    with pytest.raises(ValueError, match="both allow"):
        Decision(True, (DenyReason("x", "y"),), {}, None, None)
    with pytest.raises(ValueError, match="at least one reason"):
        Decision(False, (), {}, None, None)
    d = Decision(False, (DenyReason("b", "2"), DenyReason("a", "1")), {}, None, "v")
    assert [r.code for r in d.deny] == ["a", "b"]
    with pytest.raises(PolicyDenied) as err:
        d.verify_allowed()
    assert err.value.status == 403
    assert err.value.extra["reasons"] == [
        {"code": "a", "message": "1"},
        {"code": "b", "message": "2"},
    ]


def test_obligations_are_read_only() -> None:
    d = Decision(True, (), {"f": {"operation": "pass"}}, "public", "v")
    obligations: Any = d.obligations
    with pytest.raises(TypeError):
        obligations["g"] = {"operation": "pass"}
    with pytest.raises(TypeError):
        obligations["f"]["operation"] = "drop"
