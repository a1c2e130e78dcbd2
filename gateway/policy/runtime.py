"""The policy runtime an exchange asks: the configured engine, kept on the active version.

Gateway nodes are stateless; the active policy version lives in the database
(``PolicyService``). Before deciding, the runtime makes sure its engine holds
that version: it reads the active pointer at most every ``refresh_s`` seconds
(immediately after an activation through this process's service), and loads
the new bundle into the embedded engine or pushes it to the OPA server. So an
activation on any node reaches every node within about a second, and a node
that cannot load or confirm the active version denies (``policy_error``)
rather than deciding with a policy that is no longer approved.

Loading a version into the embedded engine with its VM enabled passes the
decision log's most recent distinct inputs as extra probes for the VM's
self-check (``gateway.policy.probes``), so the VM is checked on the inputs this
gateway actually decides, not only on synthetic ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from gateway.errors import AccordError
from gateway.policy.embedded import EmbeddedEngine, embedded_engine
from gateway.policy.engine import Decision, EngineHealth, PolicyEngine
from gateway.policy.opa import OpaEngine
from gateway.policy.probes import Probe, base_probe_input, recorded_probes
from gateway.policy.service import PolicyService
from gateway.settings import Settings

__all__ = ["DEFAULT_REFRESH_S", "PolicyRuntime"]

log = structlog.get_logger(__name__)

#: How stale a node's view of the active version may be.
DEFAULT_REFRESH_S = 1.0
#: After an engine fault the bundle is pushed again at once, at most this often.
REPAIR_EVERY_S = 1.0


class PolicyRuntime:
    """``decide`` never raises; every fault is a ``policy_error`` deny."""

    def __init__(
        self,
        engine: PolicyEngine,
        service: PolicyService,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.service = service
        self.refresh_s = refresh_s
        self._monotonic = monotonic
        self._next_check = 0.0  # check on the first decision
        self._wanted: str | None = None  # the version the database says is active
        self._problem: str | None = "not loaded yet"
        self._suspect = False  # an engine fault: push the bundle again at the next check
        self._next_repair = 0.0
        self._lock = asyncio.Lock()
        service.add_listener(self._on_local_change)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        service: PolicyService,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> PolicyRuntime:
        """Build the engine ``settings.policy_engine`` names and load the active version.

        On an empty store the shipped bundle (``settings.policy_dir``) becomes the
        first active version. An OPA server that is down does not stop the node
        from starting: decisions deny with ``policy_error`` until it answers.
        """
        await asyncio.to_thread(service.ensure_initial, settings.policy_dir)
        engine: PolicyEngine
        if settings.policy_engine == "opa":
            engine = await OpaEngine.connect(
                settings.opa_url, timeout_ms=settings.policy_timeout_ms
            )
        else:
            engine = embedded_engine(settings)
        runtime = cls(engine, service, refresh_s=refresh_s, monotonic=monotonic)
        await runtime.reload()
        return runtime

    @property
    def version(self) -> str | None:
        """The version the engine holds (may lag the database by ``refresh_s``)."""
        return self.engine.version

    async def decide(self, policy_input: Mapping[str, Any]) -> Decision:
        try:
            if self._monotonic() >= self._next_check:
                await self._sync()
            if self._problem is not None:
                return Decision.error(
                    self._problem, policy_version=self._wanted, engine=self.engine.name
                )
            decision = await self.engine.decide(policy_input)
            if decision.is_error and await self._repaired():
                decision = await self.engine.decide(policy_input)
            return decision
        except Exception as exc:  # never raise into the exchange
            return Decision.error(
                f"policy runtime failed: {type(exc).__name__}: {exc}",
                policy_version=self._wanted,
                engine=self.engine.name,
            )

    async def reload(self) -> None:
        """Read the active version now and load it if the engine holds another."""
        self._next_check = 0.0
        await self._sync()

    async def health(self) -> EngineHealth:
        """Healthy when the engine is and it holds the version the database names.

        An engine found without it (an OPA server that restarted empty) gets the
        bundle again here, so a node that a load balancer took out of service for
        it comes back by itself, without waiting for a caller to pay for it."""
        try:
            wanted = await asyncio.to_thread(self.service.active_version)
        except Exception as exc:
            return EngineHealth(False, self.engine.name, self.version, f"policy store: {exc}")
        health = await self._health_of(wanted)
        if not health.ok and await self._repaired():
            health = await self._health_of(wanted)
        return health

    async def _health_of(self, wanted: str | None) -> EngineHealth:
        health = await self.engine.health()
        if not health.ok:
            return health
        if health.policy_version != wanted:
            return EngineHealth(
                False,
                self.engine.name,
                health.policy_version,
                f"holds {health.policy_version}, the active version is {wanted}",
            )
        # Loaded is not enough: a version that answers no usable decision fails every
        # exchange closed, and the gateway is then not ready to serve any.
        probe = await self.engine.decide(base_probe_input())
        if probe.is_error:
            reason = probe.deny[0].message if probe.deny else "no decision"
            return EngineHealth(
                False,
                self.engine.name,
                health.policy_version,
                f"the active version answers no usable decision: {reason}",
            )
        return health

    async def close(self) -> None:
        self.service.remove_listener(self._on_local_change)
        await self.engine.close()

    # -- internals -----------------------------------------------------------

    async def _repaired(self) -> bool:
        """After a fault: when the engine no longer holds the active version (an OPA
        server that restarted empty), push it again now. At most once per
        ``REPAIR_EVERY_S``: a version that fails every decision must not make every
        exchange ask. True when the engine was given the version again."""
        now = self._monotonic()
        if now < self._next_repair:
            return False
        self._next_repair = now + REPAIR_EVERY_S
        held = await self.engine.health()
        if held.ok and held.policy_version == self._wanted:
            return False  # it holds the version: the fault is the version's own, or gone
        self._suspect = True
        self._next_check = 0.0
        await self._sync()
        return self._problem is None

    def _on_local_change(self, _version: str | None) -> None:
        """Called by the service (any thread) after a local activation or rollback."""
        self._next_check = 0.0

    async def _sync(self) -> None:
        async with self._lock:
            if self._monotonic() < self._next_check:
                return  # another decision refreshed while we waited
            self._next_check = self._monotonic() + self.refresh_s
            try:
                wanted = await asyncio.to_thread(self.service.active_version)
            except Exception as exc:
                self._problem = f"cannot read the active policy version: {type(exc).__name__}"
                log.error("policy_version_unknown", error=str(exc))
                return
            self._wanted = wanted
            if wanted is None:
                self._problem = "no active policy version"
                return
            if self.engine.version == wanted and self._problem is None and not self._suspect:
                return
            self._suspect = False
            try:
                bundle = await asyncio.to_thread(self.service.bundle, wanted)
                if isinstance(self.engine, EmbeddedEngine) and self.engine.vm_enabled:
                    probes = await self._recorded_probes()
                    await self.engine.load(bundle, probes=probes)
                else:
                    await self.engine.load(bundle)
            except AccordError as exc:
                self._problem = f"active policy {wanted} could not be loaded: {exc.detail}"
                log.error("policy_load_failed", version=wanted, detail=exc.detail)
                return
            except Exception as exc:
                self._problem = f"active policy {wanted} could not be loaded: {exc}"
                log.error("policy_load_failed", version=wanted, detail=str(exc))
                return
            self._problem = None
            log.info("policy_loaded", version=wanted, engine=self.engine.name)

    async def _recorded_probes(self) -> list[Probe]:
        """The decision log's recent inputs, for the VM self-check (none if unreadable)."""
        try:
            return await asyncio.to_thread(recorded_probes, self.service.engine)
        except Exception as exc:  # the synthetic probes still run
            log.warning("policy_probes_unreadable", error=f"{type(exc).__name__}: {exc}")
            return []
