"""The embedded engine's evaluator processes (gateway.policy.sandbox): a policy that is
slow or memory-hungry on some input costs that decision, never the gateway.

The policies here are slow only where the input says ``slow`` (a built-in over a
range of several million numbers: seconds of work that regorus' VM does not count
against its instruction limit), so every other decision shows whether the gateway
kept deciding while one evaluation ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import uvloop
from structlog.testing import capture_logs

from gateway.errors import PolicyError
from gateway.policy import checks, impact, loading, sandbox
from gateway.policy.bundle import PolicyBundle
from gateway.policy.checks import check_bundle
from gateway.policy.embedded import EmbeddedEngine, Isolation
from gateway.policy.probes import Probe

#: Every input takes seconds: what the proposal checks' probes meet.
SLOW_EVERYWHERE = """package accord.exchange

counted := count(numbers.range(1, 30000000))

decision := {
\t"allow": false,
\t"deny": [{"code": "invalid_input", "message": sprintf("%d", [counted])}],
\t"obligations": {},
\t"level": null,
}
"""
FAST = {"slow": False}
SLOW = {"slow": True}


def slow_bundle(numbers: int) -> PolicyBundle:
    """Allows unless ``input.slow``; then denies after counting ``numbers`` numbers."""
    text = f"""package accord.exchange

counted := count(numbers.range(1, {numbers}))

decision := {{
\t"allow": false,
\t"deny": [{{"code": "invalid_input", "message": sprintf("%d", [counted])}}],
\t"obligations": {{}},
\t"level": null,
}} if input.slow

decision := {{"allow": true, "deny": [], "obligations": {{}}, "level": null}} if not input.slow
"""
    return PolicyBundle.from_sources({"exchange.rego": text})


async def loaded_engine(
    numbers: int, *, timeout_ms: int, isolation: Isolation = "process", **kwargs: Any
) -> EmbeddedEngine:
    engine = EmbeddedEngine(timeout_ms=timeout_ms, isolation=isolation, **kwargs)
    await engine.load(slow_bundle(numbers))
    assert engine.mode == "vm", engine.mode_reason
    return engine


async def evaluators_ready(engine: EmbeddedEngine) -> int:
    """Wait (bounded) until the pool is back to full size; the number running."""
    pool = engine._pool
    assert pool is not None
    for _ in range(600):
        if pool.ready == pool.size and not pool._starting:
            break
        await asyncio.sleep(0.05)
    return pool.ready


async def exited(pid: int) -> bool:
    """Wait (bounded) until no process has ``pid``."""
    for _ in range(600):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.05)
    return False


async def evaluation_started(engine: EmbeddedEngine) -> None:
    """Wait (bounded) until an evaluator has been sent a decision."""
    pool = engine._pool
    assert pool is not None
    for _ in range(600):
        if any(e.pending for e in pool._all):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no evaluation started")


@pytest.mark.parametrize("isolation", ["process", "inline"])
async def test_a_slow_evaluation_does_not_stall_other_decisions(isolation: Isolation) -> None:
    """In evaluator processes, decisions go on while one input takes seconds; inline
    (the gateway's own process), nothing else is decided until it ends."""
    engine = await loaded_engine(30_000_000, timeout_ms=60_000, isolation=isolation)
    try:
        assert (await engine.decide(FAST)).allow  # the evaluators hold the version
        slow = asyncio.ensure_future(engine.decide(SLOW))
        await asyncio.sleep(0)  # let it start
        fast = [await engine.decide(FAST) for _ in range(20)]
        assert all(d.allow for d in fast)
        assert slow.done() is (isolation == "inline")
        decision = await slow
        assert decision.codes == ("invalid_input",)
        assert decision.deny[0].message == "30000000"
    finally:
        await engine.close()


async def test_an_overrun_evaluation_is_killed_and_its_evaluator_replaced() -> None:
    engine = await loaded_engine(30_000_000, timeout_ms=1000)
    try:
        assert (await engine.decide(FAST)).allow
        pool = engine._pool
        assert pool is not None
        before = {e.pid for e in pool._all}
        with capture_logs() as logs:
            decision = await engine.decide(SLOW)
        assert decision.codes == ("policy_error",)
        assert "policy timeout (the evaluation overran 1000 ms)" in decision.deny[0].message
        killed = [e for e in logs if e["event"] == "policy_evaluation_timeout"]
        assert len(killed) == 1 and killed[0]["pid"] in before
        assert await exited(killed[0]["pid"])  # killed and reaped, not left running
        assert await evaluators_ready(engine) == 2
        assert {e.pid for e in pool._all} - before  # a new one took its place
        assert all([(await engine.decide(FAST)).allow for _ in range(10)])
    finally:
        await engine.close()


async def test_a_policy_exceeding_the_memory_limit_ends_its_evaluator_only() -> None:
    # 50 million numbers take 1.2 GB; an idle evaluator already maps ~1 GiB (regorus'
    # allocator reserves it), so 1536 MiB leaves too little. The evaluator dies, the
    # gateway does not.
    engine = await loaded_engine(50_000_000, timeout_ms=60_000, evaluator_memory_mib=1536)
    try:
        with capture_logs() as logs:
            decision = await engine.decide(SLOW)
        assert decision.codes == ("policy_error",)
        assert "the policy evaluator failed" in decision.deny[0].message
        assert [e["event"] for e in logs if e["event"].startswith("policy_evaluat")] == [
            "policy_evaluator_died"
        ]
        assert await evaluators_ready(engine) == 2
        assert (await engine.decide(FAST)).allow
    finally:
        await engine.close()


async def test_an_evaluator_killed_while_idle_is_replaced() -> None:
    engine = await loaded_engine(10, timeout_ms=60_000)
    try:
        pool = engine._pool
        assert pool is not None
        victims = list(pool._all)
        for victim in victims:
            os.kill(victim.pid, signal.SIGKILL)
        for victim in victims:
            await victim.exited
        # Each dead one's reader sees its pipe close and replaces it; a decision
        # asked meanwhile waits for a replacement.
        assert (await engine.decide(FAST)).allow
        assert await evaluators_ready(engine) == 2
        assert not {e.pid for e in pool._all} & {v.pid for v in victims}
        health = await engine.health()
        assert health.ok and health.detail.endswith("2 of 2 evaluator processes running")
    finally:
        await engine.close()


async def test_a_cancelled_decision_never_hands_its_answer_to_the_next() -> None:
    engine = await loaded_engine(10_000_000, timeout_ms=60_000, evaluators=1)
    try:
        assert (await engine.decide(FAST)).allow
        slow = asyncio.ensure_future(engine.decide(SLOW))
        await evaluation_started(engine)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # The one evaluator still owes the slow answer; it is read and dropped, so the
        # next caller reads its own decision, not the cancelled one's.
        assert (await engine.decide(FAST)).allow
        assert (await engine.decide(SLOW)).codes == ("invalid_input",)
    finally:
        await engine.close()


async def test_close_stops_every_evaluator() -> None:
    engine = await loaded_engine(10, timeout_ms=60_000, evaluators=3)
    pool = engine._pool
    assert pool is not None
    evaluators = list(pool._all)
    assert len(evaluators) == 3
    await engine.close()
    assert all(e.returncode is not None for e in evaluators)


async def test_evaluators_get_none_of_the_gateways_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary = "canary-3f9c1e-not-for-policies"
    monkeypatch.setenv("ACCORD_PSEUDONYM_SECRET", canary)
    engine = await loaded_engine(10, timeout_ms=60_000, evaluators=1)
    try:
        pool = engine._pool
        assert pool is not None
        (evaluator,) = pool._all
        environ = Path(f"/proc/{evaluator.pid}/environ").read_bytes()  # noqa: ASYNC240
        assert canary.encode() not in environ
        assert b"ACCORD_" not in environ
    finally:
        await engine.close()


async def test_a_self_check_slow_on_a_recorded_input_leaves_the_version_interpreted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading compares the VM with the interpreter on recorded inputs, in a process of
    its own; one that does not finish in time does not stop the version from loading."""
    monkeypatch.setattr(loading, "PREPARE_TIMEOUT_S", 2.0)
    engine = EmbeddedEngine(timeout_ms=60_000)
    try:
        recorded = Probe("recorded input of exchange ex-slow", json.dumps(SLOW))
        await engine.load(slow_bundle(30_000_000), probes=[recorded])
        assert engine.mode == "interpreter"
        assert engine.mode_reason.startswith("the VM self-check did not finish (the prepare job")
        assert (await engine.decide(FAST)).allow
    finally:
        await engine.close()


async def test_proposal_checks_of_a_slow_bundle_fail_without_stalling_the_gateway(
    monkeypatch: pytest.MonkeyPatch, opa_bin: Path
) -> None:
    """The proposal checks evaluate every probe; a bundle slow on them all fails the
    ``regorus`` check at the timeout, while the gateway goes on deciding."""
    monkeypatch.setattr(checks, "_TIMEOUT_S", 3)
    bundle = PolicyBundle.from_sources({"exchange.rego": SLOW_EVERYWHERE})
    engine = await loaded_engine(10, timeout_ms=60_000)
    try:
        report = asyncio.ensure_future(asyncio.to_thread(check_bundle, bundle, opa_bin))
        fast = [await engine.decide(FAST) for _ in range(20)]
        assert all(d.allow for d in fast)
        assert not report.done()  # decided while the checks ran
        results = {c.name: c for c in (await report).checks}
        assert not results["regorus"].ok
        assert results["regorus"].detail == "the checks job overran 3 s and was stopped"
        assert results["well_formed_decisions"].skipped and results["regorus_vm"].skipped
    finally:
        await engine.close()


def test_a_dry_run_that_does_not_finish_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impact, "REPLAY_TIMEOUT_S", 2.0)
    bundle = slow_bundle(30_000_000)
    assert [d.allow for d in impact.replay(bundle, [FAST, FAST])] == [True, True]
    with pytest.raises(PolicyError) as refused:
        impact.replay(bundle, [FAST, SLOW, FAST])
    assert refused.value.code == "policy_invalid"
    assert "the replay job overran 2 s and was stopped" in refused.value.detail


async def test_decisions_queued_behind_an_overrun_go_to_another_evaluator() -> None:
    """Decisions sent to an evaluator after a slow one are not failed with it."""
    engine = await loaded_engine(30_000_000, timeout_ms=1000)
    try:
        assert (await engine.decide(FAST)).allow
        slow = asyncio.ensure_future(engine.decide(SLOW))
        await evaluation_started(engine)
        # Ten at once: the least busy evaluator takes most, the slow one's queue some.
        fast = await asyncio.gather(*(engine.decide(FAST) for _ in range(10)))
        assert all(d.allow for d in fast), [d.to_json() for d in fast if not d.allow]
        assert (await slow).codes == ("policy_error",)
    finally:
        await engine.close()


async def test_with_one_evaluator_a_decision_waits_for_its_replacement() -> None:
    engine = await loaded_engine(30_000_000, timeout_ms=1000, evaluators=1)
    try:
        assert (await engine.decide(FAST)).allow
        slow = asyncio.ensure_future(engine.decide(SLOW))
        await evaluation_started(engine)
        queued = asyncio.ensure_future(engine.decide(FAST))  # behind the slow one
        assert (await slow).codes == ("policy_error",)
        assert (await queued).allow  # sent again to the evaluator started in its place
    finally:
        await engine.close()


def test_the_evaluators_work_on_uvloop_as_the_served_gateway_runs_them() -> None:
    """uvicorn runs the gateway on uvloop, whose subprocess transports differ from
    asyncio's: the same decide, overrun and replacement there."""

    async def scenario() -> None:
        engine = await loaded_engine(30_000_000, timeout_ms=1000)
        try:
            assert (await engine.decide(FAST)).allow
            assert (await engine.decide(SLOW)).codes == ("policy_error",)
            assert await evaluators_ready(engine) == 2
            assert all([(await engine.decide(FAST)).allow for _ in range(5)])
        finally:
            await engine.close()

    uvloop.run(scenario())


async def test_an_answer_too_large_fails_its_decision_not_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decision of some 5 KB against a limit of 2,000 bytes: that decision fails
    closed and its evaluator is replaced; the gateway never buffers the rest."""
    monkeypatch.setattr(sandbox, "MAX_ANSWER_BYTES", 2_000)
    wide = """package accord.exchange

listed := concat(",", [sprintf("%d", [n]) | some n in numbers.range(1, 1000)])

decision := {"allow": false, "deny": [{"code": "invalid_input", "message": listed}],
\t"obligations": {}, "level": null} if input.wide

decision := {"allow": true, "deny": [], "obligations": {}, "level": null} if not input.wide
"""
    engine = EmbeddedEngine(timeout_ms=60_000, vm=False)
    try:
        await engine.load(PolicyBundle.from_sources({"exchange.rego": wide}))
        assert (await engine.decide({"wide": False})).allow
        with capture_logs() as logs:
            decision = await engine.decide({"wide": True})
        assert decision.codes == ("policy_error",)
        assert "the policy evaluator failed (_EvaluatorFault)" in decision.deny[0].message
        died = [e for e in logs if e["event"] == "policy_evaluator_died"]
        assert died and "an answer of" in died[0]["error"]
        assert await evaluators_ready(engine) == 2
        assert (await engine.decide({"wide": False})).allow
    finally:
        await engine.close()
