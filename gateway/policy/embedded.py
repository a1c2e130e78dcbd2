"""The embedded policy engine: regorus (PyPI ``gordon-to-regorus``), no server.

By default each policy version is compiled once to regorus' virtual machine
(``regorus.Program`` / ``regorus.Rvm``), several times faster than its
tree-walking interpreter. The VM is younger than the interpreter and has
mis-evaluated Rego forms the interpreter gets right, so before the VM decides
anything for a version, a self-check decides every probe input
(``gateway.policy.probes``: a fixed synthetic set plus the recorded inputs the
runtime passes) on both, with throwaway engines; on any difference the version
is interpreted and a warning names the first differing probe. A version the
VM cannot compile is interpreted too, and ``ACCORD_EMBEDDED_VM=false`` always
interprets. ``mode`` / ``health()`` say which evaluator decides and why.

By default decisions are evaluated in evaluator processes
(``isolation="process"``, ``ACCORD_POLICY_ISOLATION``; ``gateway.policy.sandbox``),
and loading (``gateway.policy.loading``) self-checks in one too: regorus keeps
the GIL for a whole evaluation and cannot be interrupted, so only another
process bounds how long a policy that is slow on some input may take (it is
killed at the policy timeout, and the decision is a ``policy_error`` deny) and
how much memory it may use. The in-process paths below remain for
``isolation="inline"`` (faster by the hop to an evaluator and back, but
unbounded: docs/policy-engines.md), for ``decide_sync`` (benchmarks), and for
a ``decide`` from an event loop other than the one the evaluators were started on.

regorus objects are "unsendable": they panic if used, and complain if
dropped, on any thread but the one that made them. So, in this process:

* the interpreter (and the VM when called from a foreign thread) lives on one
  dedicated worker thread; the event loop talks to it through the executor,
  bounded by ``asyncio.timeout``; worker functions never let an exception
  (whose traceback would keep an engine alive) cross back: they return
  ``(value, error text)`` instead;
* the VM decides **inline** on the thread of the first ``decide`` (the event
  loop's), because one evaluation (~100-200 µs) costs less than the hop to a
  worker and back. Its ``Rvm`` is made there from the version's serialised
  program and dropped there (``close`` runs on the loop). An inline
  evaluation cannot be interrupted: one that overran the policy timeout is
  answered with the ``policy_error`` deny anyway (fail closed) and logged,
  but the latency bound itself is not enforced on that path. Evaluations do
  end: Rego has no unbounded recursion, and regorus' VM stops any evaluation
  after a fixed 25,000 instructions (built-ins excepted). A worker would not
  help: regorus keeps the GIL while it evaluates (measured), so a slow
  evaluation stalls the loop on the worker path as well;
* an input the VM cannot evaluate (it raised; in practice that instruction
  limit, which the shipped policy reaches at some 200+ requested fields) is
  decided by the interpreter on the worker, under ``asyncio.timeout``. The
  self-check counts on this: a probe the VM cannot evaluate gets the
  interpreter's decision by construction.

Rego conflicts (a complete rule, function or object key with two values for
one input: OPA's ``eval_conflict_error``) fail closed on the VM too: the VM
compiles the version with conflict guards (``gateway.policy._regorus_conflicts``)
and an input a guard trips is handed to the interpreter, which fails as OPA
does; a version with a rule no guard can check (e.g. a function defined twice
with different values) is interpreted. Both follow from the sources alone.

A version once interpreted stays interpreted in this process, whatever later
loads' recorded probes say: a reload never moves a version back to the VM.

Why regorus and not regopy: docs/policy-engines.md.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import structlog

from gateway.errors import PolicyError
from gateway.policy._regorus import (
    first_lines,
    new_interpreter,
    new_vm,
    run_interpreter,
    run_vm,
)
from gateway.policy.bundle import PolicyBundle
from gateway.policy.engine import Decision, EngineHealth, decision_from_value
from gateway.policy.loading import Loaded, Mode, prepare, prepare_isolated
from gateway.policy.probes import Probe
from gateway.policy.sandbox import EvaluatorPool
from gateway.settings import Settings

__all__ = ["EmbeddedEngine", "Isolation", "Mode", "embedded_engine"]

log = structlog.get_logger(__name__)

Isolation = Literal["process", "inline"]

#: Inline VMs whose engine was closed from a thread that does not own them:
#: kept forever rather than dropped on the wrong thread.
_STRANDED: list[Any] = []


def _try_vm(vm: Any, payload: str) -> tuple[Any, bool]:
    """(value, False), or (None, True) when the VM raised (e.g. its instruction limit)."""
    try:
        return run_vm(vm, payload), False
    except Exception:
        return None, True


def embedded_engine(settings: Settings) -> EmbeddedEngine:
    """The embedded engine as ``settings`` configure it (not loaded yet)."""
    return EmbeddedEngine(
        timeout_ms=settings.policy_timeout_ms,
        vm=settings.embedded_vm,
        isolation=settings.policy_isolation,
        evaluators=settings.policy_evaluators,
        evaluator_memory_mib=settings.policy_evaluator_memory_mib,
    )


class EmbeddedEngine:
    """``PolicyEngine`` backed by regorus: in evaluator processes, or in this one."""

    name = "embedded"

    def __init__(
        self,
        *,
        timeout_ms: int = 500,
        vm: bool = True,
        isolation: Isolation = "process",
        evaluators: int = 2,
        evaluator_memory_mib: int = 2048,
    ) -> None:
        self._timeout = timeout_ms / 1000
        self._vm = vm
        self._isolation: Isolation = isolation
        self._pool: EvaluatorPool | None = None
        self._evaluators = evaluators
        self._memory_mib = evaluator_memory_mib
        # One thread: regorus keeps the GIL while it evaluates, so more threads
        # would not decide faster, and one thread owns one Engine.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regorus")
        self._local = threading.local()
        self._loaded: Loaded | None = None
        # The inline VM: owned by the first thread that decides, made per version.
        self._claim = threading.Lock()
        self._owner: threading.Thread | None = None
        self._inline_version: str | None = None
        self._inline_vm: Any = None

    @property
    def version(self) -> str | None:
        return self._loaded.version if self._loaded else None

    @property
    def vm_enabled(self) -> bool:
        """Whether the VM may decide (``ACCORD_EMBEDDED_VM``), self-check permitting."""
        return self._vm

    @property
    def isolation(self) -> Isolation:
        """Where decisions are evaluated: ``process`` (evaluator processes) or ``inline``."""
        return self._isolation

    @property
    def mode(self) -> Mode | None:
        """Which evaluator decides the loaded version: ``vm`` or ``interpreter``."""
        return self._loaded.mode if self._loaded else None

    @property
    def mode_reason(self) -> str:
        """Why: the self-check's verdict, a compile error, or the setting."""
        return self._loaded.why if self._loaded else ""

    async def load(self, bundle: PolicyBundle, *, probes: Sequence[Probe] = ()) -> None:
        """Load ``bundle``; with the VM enabled, self-check it on the probes plus ``probes``."""
        sources = tuple(bundle.policy_sources().items())
        result: Loaded | str
        if self._isolation == "process":
            result = await asyncio.to_thread(
                prepare_isolated,
                bundle.version,
                sources,
                self._vm,
                tuple(probes),
                self._memory_mib,
            )
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self._executor, prepare, bundle.version, sources, self._vm, tuple(probes)
            )
        if isinstance(result, str):
            raise PolicyError(f"regorus cannot load the bundle: {result}", code="policy_invalid")
        if self._vm and result.mode == "interpreter":
            log.warning("policy_vm_not_used", version=result.version, reason=result.why)
        else:
            log.info("policy_engine_mode", version=result.version, mode=result.mode, why=result.why)
        if self._isolation == "process" and self._pool is None:
            pool = EvaluatorPool(
                size=self._evaluators, timeout_s=self._timeout, memory_mib=self._memory_mib
            )
            try:
                await pool.start()
            except OSError as exc:
                await pool.close()
                raise PolicyError(str(exc)) from exc
            self._pool = pool
        self._loaded = result

    async def decide(self, policy_input: Mapping[str, Any]) -> Decision:
        loaded = self._loaded
        if loaded is None:
            return Decision.error("no policy loaded", policy_version=None, engine=self.name)
        try:
            payload = json.dumps(policy_input, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return Decision.error(
                f"input is not JSON: {exc}", policy_version=loaded.version, engine=self.name
            )
        pool = self._pool
        if pool is not None:
            if pool.serves_this_loop():
                return await self._decide_isolated(pool, loaded, payload)
            log.warning("policy_not_isolated", detail="decided from another event loop")
        use_vm = loaded.program is not None
        if use_vm and self._owns_inline_vm():
            decision = self._decide_inline(loaded, payload)
            if decision is not None:
                return decision
            use_vm = False  # the VM could not evaluate this input: the interpreter decides
        loop = asyncio.get_running_loop()
        try:
            # asyncio.timeout, not wait_for: no extra task per decision.
            async with asyncio.timeout(self._timeout):
                value, error = await loop.run_in_executor(
                    self._executor, self._evaluate, loaded, payload, use_vm
                )
        except TimeoutError:
            return Decision.error("policy timeout", policy_version=loaded.version, engine=self.name)
        return self._finish(loaded, value, error)

    def decide_sync(self, policy_input: Mapping[str, Any]) -> Decision:
        """Decide on the calling thread with its own Engine or Rvm (benchmarks, dry-runs).

        The calling thread keeps that object until ``drop_thread_engine`` is
        called on it; call that before the thread ends.
        """
        loaded = self._loaded
        if loaded is None:
            return Decision.error("no policy loaded", policy_version=None, engine=self.name)
        payload = json.dumps(policy_input, ensure_ascii=False, allow_nan=False)
        value, error = self._evaluate(loaded, payload)
        return self._finish(loaded, value, error)

    def drop_thread_engine(self) -> None:
        """Release the calling thread's Engine or Rvm (see ``decide_sync``)."""
        self._local.__dict__.clear()

    async def health(self) -> EngineHealth:
        if self._loaded is None:
            return EngineHealth(False, self.name, None, "no policy loaded")
        loaded = self._loaded
        detail = f"{loaded.mode}: {loaded.why}"
        if self._pool is not None:
            ready = self._pool.ready
            detail = f"{detail}; {ready} of {self._pool.size} evaluator processes running"
            if ready == 0:
                return EngineHealth(False, self.name, loaded.version, detail)
        return EngineHealth(True, self.name, loaded.version, detail)

    async def close(self) -> None:
        """Stop the evaluators; drop the inline VM here (the loop that owns it), the
        worker's engine there; then stop the worker."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self._drop_inline_vm()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.drop_thread_engine)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    # -- internals -----------------------------------------------------------

    def _owns_inline_vm(self) -> bool:
        """True on the thread that owns the inline VM (the first one to decide)."""
        owner = self._owner
        if owner is None:
            with self._claim:
                if self._owner is None:
                    self._owner = threading.current_thread()
                owner = self._owner
        return owner is threading.current_thread()

    async def _decide_isolated(self, pool: EvaluatorPool, loaded: Loaded, payload: str) -> Decision:
        outcome = await pool.evaluate(loaded.for_evaluators, payload)
        if outcome.interpreted:
            log.info("policy_vm_handed_to_interpreter", version=loaded.version)
        return self._finish(loaded, outcome.value, outcome.error)

    def _decide_inline(self, loaded: Loaded, payload: str) -> Decision | None:
        """The VM's decision on this thread, or None when the VM could not evaluate the input."""
        started = time.perf_counter()
        value, error = self._run_inline(loaded, payload)
        elapsed = time.perf_counter() - started
        if elapsed > self._timeout:
            # Cannot be interrupted, only refused after the fact: fail closed.
            log.error("policy_inline_timeout", version=loaded.version, ms=round(elapsed * 1000))
            return Decision.error(
                f"policy timeout (the VM took {elapsed * 1000:.0f} ms)",
                policy_version=loaded.version,
                engine=self.name,
            )
        if error is not None:
            # Typically regorus' fixed limit of 25,000 VM instructions (a request
            # for some 200+ fields with the shipped policy); never a decision.
            log.info("policy_vm_handed_to_interpreter", version=loaded.version, error=error)
            return None
        return self._finish(loaded, value, None)

    def _run_inline(self, loaded: Loaded, payload: str) -> tuple[Any, str | None]:
        try:
            if self._inline_version != loaded.version:
                self._inline_vm = self._inline_version = None
                assert loaded.program is not None
                self._inline_vm = new_vm(loaded.program)
                self._inline_version = loaded.version
            return run_vm(self._inline_vm, payload), None
        except Exception as exc:
            return None, first_lines(exc, 1)

    def _drop_inline_vm(self) -> None:
        vm, self._inline_vm, self._inline_version = self._inline_vm, None, None
        if vm is not None and self._owner is not threading.current_thread():
            log.warning("policy_vm_stranded", detail="closed from a thread that does not own it")
            _STRANDED.append(vm)
        del vm
        self._owner = None

    def _finish(self, loaded: Loaded, value: Any, error: str | None) -> Decision:
        if error is not None:
            return Decision.error(
                f"policy evaluation failed: {error}",
                policy_version=loaded.version,
                engine=self.name,
            )
        return decision_from_value(value, policy_version=loaded.version, engine=self.name)

    def _evaluate(
        self, loaded: Loaded, payload: str, use_vm: bool = True
    ) -> tuple[Any, str | None]:
        """Decide with the calling thread's own Rvm or Engine (each made once per version).

        Whatever the VM cannot evaluate (it raised) is decided by the interpreter.
        """
        try:
            state = self._local.__dict__
            if state.get("version") != loaded.version:
                state.clear()
                state["version"] = loaded.version
            if use_vm and loaded.program is not None:
                vm = state.get("vm")
                if vm is None:
                    vm = state["vm"] = new_vm(loaded.program)
                value, failed = _try_vm(vm, payload)
                if not failed:
                    return value, None
            engine = state.get("engine")
            if engine is None:
                engine = state["engine"] = new_interpreter(loaded.sources)
            return run_interpreter(engine, payload), None
        except Exception as exc:
            return None, first_lines(exc)
