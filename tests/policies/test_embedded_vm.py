"""The embedded engine's VM: on by default behind a self-check against the interpreter,
deciding in evaluator processes or (``isolation="inline"``) inline on the loop that
first asks, and handing to the interpreter whatever it gets wrong (a whole version) or
cannot evaluate (one input). The evaluator processes themselves: test_sandbox.py."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.policy._regorus import compile_program, new_vm, run_vm
from gateway.policy.bundle import PolicyBundle
from gateway.policy.checks import check_bundle
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.factory import open_engine
from gateway.policy.runtime import PolicyRuntime
from gateway.settings import Settings
from tests.policies.conftest import POLICY_DIR
from tests.policies.harness import base_input, load_corpus
from tests.policies.workflow_support import bundle_with, patched, policy_store, shipped_sources

#: The form validation.rego avoids: assigning a possibly undefined path, then
#: negating a test on it. regorus' VM fires the negation when the path is absent.
SAFE_COHORT = """\tk := "request.query.cohort_size"
\tsome key, cohort in input.request.query
\tkey == "cohort_size"
\tnot is_number(cohort)"""
VM_WRONG_COHORT = """\tk := "request.query.cohort_size"
\tcohort := input.request.query.cohort_size
\tnot is_number(cohort)"""
#: The same form, reachable only through a dataset no synthetic probe names.
RARE_RULE = """package accord.exchange

deny_reasons contains reason("invalid_input", "vehicle cohort must be a number") if {
\tinput.request.dataset == "vehicle@7"
\tcohort := input.request.query.cohort_size
\tnot is_number(cohort)
}
"""
VEHICLE = patched(base_input(), request__dataset="vehicle@7")


def vm_wrong_bundle() -> PolicyBundle:
    validation = shipped_sources()["validation.rego"]
    assert SAFE_COHORT in validation
    return bundle_with(validation_rego=validation.replace(SAFE_COHORT, VM_WRONG_COHORT))


def vm_value(bundle: PolicyBundle, doc: Any) -> Any:
    """What the VM alone answers (made and dropped on this thread)."""
    vm = new_vm(compile_program(tuple(bundle.policy_sources().items())))
    value = run_vm(vm, json.dumps(doc))
    del vm
    return value


def dev_settings(**kw: Any) -> Settings:
    return Settings(dev_mode=True, policy_dir=POLICY_DIR, **kw)


async def test_default_settings_decide_the_shipped_bundle_on_the_vm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACCORD_EMBEDDED_VM", raising=False)
    settings = dev_settings()
    assert settings.embedded_vm is True
    engine = await open_engine(settings)
    try:
        assert isinstance(engine, EmbeddedEngine)
        assert engine.mode == "vm"
        assert "agrees with the interpreter on" in engine.mode_reason
        health = await engine.health()
        assert health.ok and health.detail.startswith("vm: the VM agrees")
        assert (await engine.decide(base_input())).allow
    finally:
        await engine.close()


async def test_vm_false_interprets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCORD_EMBEDDED_VM", "false")
    settings = dev_settings()
    assert settings.embedded_vm is False
    engine = await open_engine(settings)
    try:
        assert isinstance(engine, EmbeddedEngine)
        assert engine.mode == "interpreter"
        assert (await engine.health()).detail.startswith("interpreter: ACCORD_EMBEDDED_VM=false")
        assert (await engine.decide(base_input())).allow
        assert engine._inline_vm is None and engine._owner is None  # never went inline
    finally:
        await engine.close()


async def test_vm_that_disagrees_falls_back_to_the_interpreter() -> None:
    bad = vm_wrong_bundle()
    # The VM alone really gets this bundle wrong on a plain record request ...
    assert [r["code"] for r in vm_value(bad, base_input())["deny"]] == ["invalid_input"]
    engine = EmbeddedEngine(timeout_ms=5000)
    try:
        with capture_logs() as logs:
            await engine.load(bad)
        # ... so the self-check keeps this version on the interpreter, and says why.
        assert engine.mode == "interpreter"
        assert "VM disagrees with the interpreter on probe 0 (base input)" in engine.mode_reason
        assert "interpreter allow" in engine.mode_reason and "VM deny" in engine.mode_reason
        warned = [e for e in logs if e["event"] == "policy_vm_not_used"]
        assert warned and "probe 0 (base input)" in warned[0]["reason"]
        assert (await engine.health()).detail.startswith("interpreter: VM disagrees")
        # Decisions are then the interpreter's: every corpus expectation holds.
        for case in load_corpus():
            d = await engine.decide(case.input)
            assert d.allow is case.expect["allow"], case.name
            assert set(d.codes) == set(case.expect["codes"]), case.name
        assert engine._inline_vm is None
    finally:
        await engine.close()


async def test_vm_that_cannot_compile_is_interpreted() -> None:
    # A partial object rule with a constant key in its head: the VM refuses it.
    extra = (
        'package accord.exchange\n\nlabels["fixed"] := "x" if input.request\n\n'
        'deny_reasons contains reason("invalid_input", "never") if labels.fixed == "y"\n'
    )
    engine = EmbeddedEngine(timeout_ms=5000)
    try:
        await engine.load(bundle_with({"labels.rego": extra}))
        assert engine.mode == "interpreter"
        assert engine.mode_reason.startswith("the VM cannot compile this version")
        assert (await engine.decide(base_input())).allow
    finally:
        await engine.close()


async def test_vm_decides_inline_on_the_loop_and_drops_its_rvm_there(
    shipped_bundle: PolicyBundle,
) -> None:
    engine = EmbeddedEngine(timeout_ms=5000, isolation="inline")
    await engine.load(shipped_bundle)
    try:
        d = await engine.decide(base_input())
        assert d.allow and d.policy_version == shipped_bundle.version
        assert engine._owner is threading.current_thread()
        assert engine._inline_version == shipped_bundle.version
        assert engine._inline_vm is not None
    finally:
        await engine.close()
    assert engine._inline_vm is None and engine._owner is None


async def test_decide_from_a_foreign_thread_uses_the_worker(shipped_bundle: PolicyBundle) -> None:
    engine = EmbeddedEngine(timeout_ms=5000, isolation="inline")
    await engine.load(shipped_bundle)
    try:
        here = (await engine.decide(base_input())).to_json()  # this loop owns the inline VM
        seen: dict[str, Any] = {}

        def elsewhere() -> None:
            # Touching the loop's Rvm here would panic (regorus objects are unsendable).
            seen["async"] = asyncio.run(engine.decide(base_input())).to_json()
            seen["sync"] = engine.decide_sync(base_input()).to_json()
            engine.drop_thread_engine()

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(60)
        assert seen == {"async": here, "sync": here}
        assert engine._owner is threading.current_thread()
    finally:
        await engine.close()


async def test_input_beyond_the_vm_instruction_limit_is_decided_by_the_interpreter(
    shipped_bundle: PolicyBundle,
) -> None:
    doc = base_input()
    for i in range(300):
        doc["request"]["fields"][f"extra_{i}"] = {"level": "public"}
        doc["agreement"]["datasets"]["person@1"]["fields"][f"extra_{i}"] = {"operation": "pass"}
    with pytest.raises(RuntimeError, match="instruction limit"):
        vm_value(shipped_bundle, doc)
    engine = EmbeddedEngine(timeout_ms=5000)
    await engine.load(shipped_bundle)
    try:
        assert engine.mode == "vm"
        inline = await engine.decide(doc)
        assert inline.allow and len(inline.obligations) == 302
        assert engine.decide_sync(doc).to_json() == inline.to_json()
        engine.drop_thread_engine()
    finally:
        await engine.close()


async def test_inline_vm_overrun_is_policy_error() -> None:
    slow = "package accord.exchange\n\ndecision := count([x | some x in numbers.range(1, 2000)])\n"
    engine = EmbeddedEngine(timeout_ms=1, isolation="inline")
    try:
        never = "package accord.exchange\n\ndecision := 1 if input.never\n"
        await engine.load(PolicyBundle.from_sources({"exchange.rego": never}))
        assert engine._loaded is not None and engine.mode == "vm"
        sources = (("exchange.rego", slow),)
        engine._loaded = replace(
            engine._loaded, version="sha256:slow", sources=sources, program=compile_program(sources)
        )
        engine._timeout = 0  # any measurable evaluation overruns it
        d = await engine.decide({})
        assert d.codes == ("policy_error",) and "timeout" in d.deny[0].message
        assert engine._inline_version == "sha256:slow"  # it was decided inline
    finally:
        await engine.close()


def test_proposal_checks_report_the_vm_disagreement(opa_bin: Path) -> None:
    report = check_bundle(vm_wrong_bundle(), opa_bin)
    assert report.ok  # reported, not a reason to reject
    vm = {c.name: c for c in report.checks}["regorus_vm"]
    assert vm.ok
    assert "VM disagrees with the interpreter on probe 0 (base input)" in vm.detail
    assert vm.detail.endswith("this version will be interpreted")
    shipped = {c.name: c for c in check_bundle(bundle_with(), opa_bin).checks}["regorus_vm"]
    assert shipped.detail.endswith("this version will run on the VM")


async def test_runtime_self_checks_on_recorded_inputs(sqlite_url: str, tmp_path: Path) -> None:
    """A VM fault only the gateway's own traffic reaches still sends the version to the
    interpreter, because the runtime passes the decision log's inputs as probes."""
    rare = bundle_with({"vehicle.rego": RARE_RULE})
    assert "invalid_input" in {r["code"] for r in vm_value(rare, VEHICLE)["deny"]}
    policy_dir = tmp_path / "bundle"
    rare.write_to(policy_dir)
    settings = Settings(dev_mode=True, database_url=sqlite_url, policy_dir=policy_dir)
    with policy_store(sqlite_url, None) as (service, _, _):
        runtime = await PolicyRuntime.open(settings, service)
        try:
            assert isinstance(runtime.engine, EmbeddedEngine)
            assert runtime.engine.mode == "vm"  # no synthetic probe reaches the rule
            decision = await runtime.decide(VEHICLE)
            service.record_decision(exchange_id="ex-7", policy_input=VEHICLE, decision=decision)
            runtime._suspect = True  # reload at the next check, as after an engine fault
            await runtime.reload()
            assert runtime.engine.mode == "interpreter"
            assert "recorded input of exchange ex-7" in runtime.engine.mode_reason
            after = await runtime.decide(VEHICLE)
            assert after.codes == ("dataset_not_covered",)
        finally:
            await runtime.close()
