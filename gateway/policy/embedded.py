"""The embedded policy engine: regorus (PyPI ``gordon-to-regorus``) in-process.

A regorus ``Engine`` is "unsendable": it panics if used *or dropped* on any
thread but the one that made it. So each engine lives in one dedicated worker
thread that builds its own ``Engine`` from the active bundle's sources the
first time it sees a new version; the event loop only talks to it through the
executor, and worker functions never let an exception (whose traceback would
keep the Engine alive) cross back to another thread: they return
``(value, error text)`` instead. Why regorus and not regopy: docs/policy-engines.md.

With ``vm=True`` the bundle is compiled once per version to regorus' virtual
machine (``regorus.Program`` / ``regorus.Rvm``), about four times faster than the
tree-walking interpreter. The VM is younger than the interpreter and mis-evaluates
some Rego forms (the shipped policy avoids the two we found; the differential
corpus runs on it against a real OPA server), so it is opt-in
(``ACCORD_EMBEDDED_VM=true``). A bundle the VM cannot compile is interpreted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import regorus

from gateway.errors import PolicyError
from gateway.policy.bundle import DECISION_QUERY, PolicyBundle
from gateway.policy.engine import Decision, EngineHealth, decision_from_value

__all__ = ["EmbeddedEngine", "compile_check"]

log = logging.getLogger("gateway.policy.embedded")

#: regorus reports unknown built-ins only when a rule is evaluated, not when it
#: is added, so loading evaluates the decision once on an empty input.
_PROBE_INPUT = "{}"


@dataclass(frozen=True)
class _Loaded:
    version: str
    sources: tuple[tuple[str, str], ...]


def _check_sources(sources: tuple[tuple[str, str], ...]) -> str | None:
    """Load and probe on the calling thread; return the error text or None."""
    try:
        engine = regorus.Engine()
        for path, text in sources:
            engine.add_policy(path, text)
        engine.set_input_json(_PROBE_INPUT)
        engine.eval_rule(DECISION_QUERY)
    except Exception as exc:  # regorus raises RuntimeError with a rendered source excerpt
        return _first_lines(exc)
    return None


def compile_check(bundle: PolicyBundle) -> None:
    """Raise ``PolicyError`` naming the file and rule regorus cannot load or evaluate.

    Runs on the calling thread with a throwaway engine.
    """
    error = _check_sources(tuple(bundle.policy_sources().items()))
    if error is not None:
        raise PolicyError(f"regorus cannot load the bundle: {error}", code="policy_invalid")


class EmbeddedEngine:
    """``PolicyEngine`` backed by regorus on a dedicated worker thread."""

    name = "embedded"

    def __init__(self, *, timeout_ms: int = 500, vm: bool = False) -> None:
        self._timeout = timeout_ms / 1000
        self._vm = vm
        # One thread: regorus keeps the GIL while it evaluates, so more threads
        # would not decide faster, and one thread owns one Engine.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regorus")
        self._local = threading.local()
        self._loaded: _Loaded | None = None

    @property
    def version(self) -> str | None:
        return self._loaded.version if self._loaded else None

    async def load(self, bundle: PolicyBundle) -> None:
        loaded = _Loaded(bundle.version, tuple(bundle.policy_sources().items()))
        loop = asyncio.get_running_loop()
        error = await loop.run_in_executor(self._executor, _check_sources, loaded.sources)
        if error is not None:
            raise PolicyError(f"regorus cannot load the bundle: {error}", code="policy_invalid")
        self._loaded = loaded

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
        loop = asyncio.get_running_loop()
        try:
            # asyncio.timeout, not wait_for: no extra task per decision.
            async with asyncio.timeout(self._timeout):
                value, error = await loop.run_in_executor(
                    self._executor, self._evaluate, loaded, payload
                )
        except TimeoutError:
            return Decision.error("policy timeout", policy_version=loaded.version, engine=self.name)
        return self._finish(loaded, value, error)

    def decide_sync(self, policy_input: Mapping[str, Any]) -> Decision:
        """Decide on the calling thread with its own Engine (benchmarks, dry-runs).

        The calling thread keeps that Engine until ``drop_thread_engine`` is
        called on it; call that before the thread ends.
        """
        loaded = self._loaded
        if loaded is None:
            return Decision.error("no policy loaded", policy_version=None, engine=self.name)
        value, error = self._evaluate(loaded, json.dumps(policy_input, allow_nan=False))
        return self._finish(loaded, value, error)

    def drop_thread_engine(self) -> None:
        """Release the calling thread's Engine (see ``decide_sync``)."""
        self._local.__dict__.clear()

    def _finish(self, loaded: _Loaded, value: Any, error: str | None) -> Decision:
        if error is not None:
            return Decision.error(
                f"policy evaluation failed: {error}",
                policy_version=loaded.version,
                engine=self.name,
            )
        return decision_from_value(value, policy_version=loaded.version, engine=self.name)

    def _evaluate(self, loaded: _Loaded, payload: str) -> tuple[Any, str | None]:
        try:
            if getattr(self._local, "version", None) != loaded.version:
                self._local.__dict__.clear()
                self._local.version = loaded.version
                self._local.vm = _compile_vm(loaded.sources) if self._vm else None
                if self._local.vm is None:
                    engine = regorus.Engine()
                    for path, text in loaded.sources:
                        engine.add_policy(path, text)
                    self._local.engine = engine
            vm = self._local.vm
            if vm is not None:
                vm.set_input_json(payload)
                return json.loads(vm.execute()), None
            engine = self._local.engine
            engine.set_input_json(payload)
            return engine.eval_rule(DECISION_QUERY), None
        except Exception as exc:
            return None, _first_lines(exc)

    async def health(self) -> EngineHealth:
        if self._loaded is None:
            return EngineHealth(False, self.name, None, "no policy loaded")
        return EngineHealth(True, self.name, self._loaded.version)

    async def close(self) -> None:
        """Drop the worker's Engine on its own thread, then stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.drop_thread_engine)
        await asyncio.to_thread(self._executor.shutdown, wait=True)


def _compile_vm(sources: tuple[tuple[str, str], ...]) -> Any:
    """A loaded regorus VM for the decision, or None when the VM cannot compile the bundle."""
    try:
        program = regorus.Program.compile_from_modules("{}", list(sources), [DECISION_QUERY])
        vm = regorus.Rvm()
        vm.load_program(program)
        vm.set_data_json("{}")
    except Exception as exc:
        log.warning("regorus VM cannot compile the bundle; interpreting: %s", _first_lines(exc))
        return None
    return vm


def _first_lines(exc: BaseException, limit: int = 6) -> str:
    """regorus errors end in a long Rust backtrace; keep the rendered source part."""
    text = str(exc).split("Stack backtrace:")[0].strip()
    return " | ".join(line.rstrip() for line in text.splitlines()[:limit] if line.strip())
