"""The runtime: an activation on one node reaches every node, on both engines, and a
node that cannot reach its OPA server or load the active version denies."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.db import session_scope
from gateway.errors import PolicyError
from gateway.policy.bundle import PolicyBundle
from gateway.policy.models import PolicyHead, PolicyVersion
from gateway.policy.runtime import PolicyRuntime
from gateway.settings import Settings
from tests._support.servers import free_port, opa_server
from tests.policies.conftest import POLICY_DIR
from tests.policies.harness import base_input
from tests.policies.workflow_support import patched, policy_store, suspend_bundle

pytestmark = pytest.mark.opa

AGR2 = patched(base_input(), agreement__id="agr-2")


class Ticks:
    """A monotonic clock the test moves by hand (no sleeping, no wall time)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def activate_in_store(engine: Engine, bundle: PolicyBundle, when: datetime) -> None:
    """Make ``bundle`` the active version by writing the store directly, past the
    workflow and its checks (what another node, or someone with the database, could do)."""
    with session_scope(engine) as s:
        s.add(
            PolicyVersion(
                version=bundle.version,
                files=bundle.sources(),
                status="active",
                proposer="x",
                proposed_at=when,
            )
        )
        s.flush()
        head = s.get(PolicyHead, 1)
        assert head is not None
        head.version = bundle.version


def settings(db_url: str, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        dev_mode=True, database_url=db_url, data_dir=tmp_path, policy_dir=POLICY_DIR, **kw
    )


async def test_activation_reaches_a_second_node(db_url: str, tmp_path: Path, opa_bin: Path) -> None:
    with (
        policy_store(db_url, opa_bin) as (node_a, _, _),
        policy_store(db_url, opa_bin) as (
            node_b,
            _,
            _,
        ),
    ):
        cfg = settings(db_url, tmp_path)
        ticks_a, ticks = Ticks(), Ticks()  # each node polls on a clock the test controls
        a = await PolicyRuntime.open(cfg, node_a, monotonic=ticks_a)
        b = await PolicyRuntime.open(cfg, node_b, monotonic=ticks)
        try:
            shipped = node_a.active_version()
            assert (await a.decide(AGR2)).allow and (await b.decide(AGR2)).allow
            proposed = suspend_bundle()
            node_a.propose(proposed, actor="user:alice")
            node_a.approve(proposed.version, actor="user:bob")
            node_a.activate(proposed.version, actor="user:bob")

            on_a = await a.decide(AGR2)  # the activating node reloads at once
            assert not on_a.allow and on_a.policy_version == proposed.version
            assert on_a.codes == ("purpose_not_permitted",)

            ticks.t += 1.5  # B's next poll of the active version is due
            on_b = await b.decide(AGR2)
            assert on_b.policy_version == proposed.version
            assert on_b.codes == ("purpose_not_permitted",)
            assert (await b.health()).ok

            node_b.rollback(actor="user:alice")  # rollback on B reaches A the same way
            assert (await a.decide(AGR2)).policy_version == proposed.version  # not yet polled
            ticks_a.t += 1.5
            back = await a.decide(AGR2)
            assert back.allow and back.policy_version == shipped
        finally:
            await a.close()
            await b.close()
        assert node_a._listeners == [] and node_b._listeners == []  # closed runtimes let go


async def test_a_node_between_polls_reports_unhealthy(sqlite_url: str, tmp_path: Path) -> None:
    with policy_store(sqlite_url, None) as (service, _, engine):
        runtime = await PolicyRuntime.open(settings(sqlite_url, tmp_path), service)
        try:
            assert (await runtime.health()).ok
            with policy_store(sqlite_url, None) as (other, _, _):
                # Another node activates a version the checks never saw: only
                # possible by writing the store directly, which health exposes.
                activate_in_store(engine, suspend_bundle(), other.clock())
                health = await runtime.health()
                assert not health.ok and "the active version is" in health.detail
        finally:
            await runtime.close()


async def test_a_version_that_answers_no_decision_is_not_ready(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Loaded is not ready: an active version whose decision is undefined (it fails
    every exchange closed) makes the engine unhealthy, and readiness says why."""
    undefined = PolicyBundle.from_sources(
        {
            "exchange.rego": "package accord.exchange\n\n"
            'decision := {"allow": true, "deny": [], "obligations": {}, "level": null} if {\n'
            '\tinput.never_there == "x"\n}\n',
        }
    )
    with policy_store(sqlite_url, None) as (service, _, engine):
        runtime = await PolicyRuntime.open(settings(sqlite_url, tmp_path), service)
        try:
            assert (await runtime.health()).ok
            activate_in_store(engine, undefined, service.clock())  # past the checks
            await runtime.reload()
            health = await runtime.health()
            assert not health.ok and "answers no usable decision" in health.detail
            # The engine holds the version; pushing it again would change nothing
            # and cost every exchange a reload.
            loads = 0
            real = runtime.engine.load

            async def counted(*args: Any, **kw: Any) -> None:
                nonlocal loads
                loads += 1
                await real(*args, **kw)

            runtime.engine.load = counted  # type: ignore[method-assign]
            for _ in range(3):
                assert (await runtime.decide(base_input())).is_error
                assert not (await runtime.health()).ok
            assert loads == 0
        finally:
            await runtime.close()


async def test_opa_node_pushes_activation_and_rollback(
    sqlite_url: str, tmp_path: Path, opa_bin: Path, scratch_opa_url: str
) -> None:
    with policy_store(sqlite_url, opa_bin) as (service, _, _):
        cfg = settings(sqlite_url, tmp_path, policy_engine="opa", opa_url=scratch_opa_url)
        runtime = await PolicyRuntime.open(cfg, service)
        try:
            first = await runtime.decide(AGR2)
            assert first.allow and first.engine == "opa"
            assert "suspend.rego" not in _opa_sources(scratch_opa_url)
            proposed = suspend_bundle()
            service.propose(proposed, actor="user:alice")
            service.approve(proposed.version, actor="user:bob")
            service.activate(proposed.version, actor="user:bob")
            d = await runtime.decide(AGR2)
            assert d.engine == "opa" and d.policy_version == proposed.version
            assert d.codes == ("purpose_not_permitted",)
            assert "# --- suspend.rego" in _opa_sources(scratch_opa_url)
            assert (await runtime.health()).ok

            service.rollback(actor="user:alice")
            assert (await runtime.decide(AGR2)).allow
            assert "suspend.rego" not in _opa_sources(scratch_opa_url)
        finally:
            await runtime.close()


def _wipe_opa(url: str) -> None:
    for p in httpx.get(url + "/v1/policies", timeout=5).json()["result"]:
        httpx.delete(f"{url}/v1/policies/{p['id']}", timeout=5)


def _opa_sources(url: str) -> str:
    policies = httpx.get(url + "/v1/policies", timeout=5).json()["result"]
    return "\n".join(p["raw"] for p in policies)


async def test_unreachable_opa_fails_closed_then_recovers(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    with policy_store(sqlite_url, None) as (service, _, _):
        cfg = settings(
            sqlite_url, tmp_path, policy_engine="opa", opa_url=f"http://127.0.0.1:{port}"
        )
        runtime = await PolicyRuntime.open(cfg, service)  # starts although OPA is down
        try:
            d = await runtime.decide(base_input())
            assert not d.allow and d.codes == ("policy_error",)
            assert not (await runtime.health()).ok
            with pytest.raises(PolicyError):
                d.verify_allowed()
        finally:
            await runtime.close()


async def test_opa_lost_mid_run_is_policy_error(sqlite_url: str, tmp_path: Path) -> None:
    with policy_store(sqlite_url, None) as (service, _, _):
        with opa_server() as url:
            cfg = settings(sqlite_url, tmp_path, policy_engine="opa", opa_url=url)
            runtime = await PolicyRuntime.open(cfg, service)
            assert (await runtime.decide(base_input())).allow
        try:
            d = await runtime.decide(base_input())
            assert d.codes == ("policy_error",) and not d.allow
            assert d.obligations == {}
        finally:
            await runtime.close()


async def test_opa_restarted_empty_gets_the_bundle_again(sqlite_url: str, tmp_path: Path) -> None:
    """An OPA server that lost its policies (restart) is given them again by the first
    decision that finds them gone, which is then decided; at most once a second."""
    with policy_store(sqlite_url, None) as (service, _, _), opa_server() as url:
        cfg = settings(sqlite_url, tmp_path, policy_engine="opa", opa_url=url)
        ticks = Ticks()
        runtime = await PolicyRuntime.open(cfg, service, monotonic=ticks)
        try:
            assert (await runtime.decide(base_input())).allow
            _wipe_opa(url)
            assert (await runtime.decide(base_input())).allow  # repaired, then decided
            _wipe_opa(url)
            ticks.t += 0.5  # within the second: not pushed again for every exchange
            assert (await runtime.decide(base_input())).codes == ("policy_error",)
            ticks.t += 1.0
            assert (await runtime.decide(base_input())).allow
        finally:
            await runtime.close()


async def test_readiness_gives_a_restarted_opa_its_bundle_without_waiting_for_traffic(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A load balancer takes a node out of service on a failed readiness check; no
    exchange would then ever arrive to repair it. The check itself repairs it."""
    with policy_store(sqlite_url, None) as (service, _, _), opa_server() as url:
        cfg = settings(sqlite_url, tmp_path, policy_engine="opa", opa_url=url)
        runtime = await PolicyRuntime.open(cfg, service, monotonic=Ticks())
        try:
            assert (await runtime.health()).ok
            _wipe_opa(url)
            health = await runtime.health()
            assert health.ok, health.detail
            assert _opa_sources(url)  # pushed again
        finally:
            await runtime.close()
