"""The embedded policy engine: regorus (PyPI ``gordon-to-regorus``) in-process.

A regorus ``Engine`` is "unsendable": it panics if touched from any thread but
the one that made it. So each engine lives in a worker thread that builds its
own ``Engine`` from the active bundle's sources the first time it sees a new
version (per-thread engines), and the event loop only ever talks to it through
the executor. Why regorus and not regopy: docs/policy-engines.md.
"""

from __future__ import annotations

import asyncio
import json
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

#: A minimal input used to make regorus resolve every rule at load time: it
#: reports unknown built-ins only when a rule is evaluated, not when added.
_PROBE_INPUT = "{}"


@dataclass(frozen=True)
class _Loaded:
    version: str
    sources: tuple[tuple[str, str], ...]


def _build(sources: tuple[tuple[str, str], ...]) -> Any:
    engine = regorus.Engine()
    for path, text in sources:
        engine.add_policy(path, text)
    return engine


def compile_check(bundle: PolicyBundle) -> None:
    """Raise ``PolicyError`` naming the file and rule regorus cannot load or evaluate.

    Runs on the calling thread with a throwaway engine.
    """
    _check_loaded(_Loaded(bundle.version, tuple(bundle.policy_sources().items())))


class EmbeddedEngine:
    """``PolicyEngine`` backed by regorus on dedicated worker threads."""

    name = "embedded"

    def __init__(self, *, timeout_ms: int = 500) -> None:
        self._timeout = timeout_ms / 1000
        # One dedicated thread: regorus holds the GIL while it evaluates, so more
        # threads would not decide faster, and one thread owns one Engine.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regorus")
        self._local = threading.local()
        self._loaded: _Loaded | None = None

    @property
    def version(self) -> str | None:
        return self._loaded.version if self._loaded else None

    async def load(self, bundle: PolicyBundle) -> None:
        loaded = _Loaded(bundle.version, tuple(bundle.policy_sources().items()))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _check_loaded, loaded)
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
            value = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._evaluate, loaded, payload),
                timeout=self._timeout,
            )
        except TimeoutError:
            return Decision.error("policy timeout", policy_version=loaded.version, engine=self.name)
        except Exception as exc:
            return Decision.error(
                f"policy evaluation failed: {_first_lines(exc)}",
                policy_version=loaded.version,
                engine=self.name,
            )
        return decision_from_value(value, policy_version=loaded.version, engine=self.name)

    def decide_sync(self, policy_input: Mapping[str, Any]) -> Decision:
        """Decide on the calling thread with its own engine (benchmarks, dry-runs).

        The calling thread keeps an Engine until ``drop_thread_engine`` is called
        on it; call that before the thread ends.
        """
        loaded = self._loaded
        if loaded is None:
            return Decision.error("no policy loaded", policy_version=None, engine=self.name)
        try:
            value = self._evaluate(loaded, json.dumps(policy_input, allow_nan=False))
        except Exception as exc:
            return Decision.error(
                f"policy evaluation failed: {_first_lines(exc)}",
                policy_version=loaded.version,
                engine=self.name,
            )
        return decision_from_value(value, policy_version=loaded.version, engine=self.name)

    def _evaluate(self, loaded: _Loaded, payload: str) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None or getattr(self._local, "version", None) != loaded.version:
            engine = _build(loaded.sources)
            self._local.engine = engine
            self._local.version = loaded.version
        engine.set_input_json(payload)
        return engine.eval_rule(DECISION_QUERY)

    async def health(self) -> EngineHealth:
        if self._loaded is None:
            return EngineHealth(False, self.name, None, "no policy loaded")
        return EngineHealth(True, self.name, self._loaded.version)

    async def close(self) -> None:
        """Drop the worker's Engine on its own thread (regorus panics otherwise), then stop it."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._drop_engine)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def drop_thread_engine(self) -> None:
        """Release the calling thread's Engine (see ``decide_sync``)."""
        self._drop_engine()

    def _drop_engine(self) -> None:
        self._local.__dict__.clear()


def _check_loaded(loaded: _Loaded) -> None:
    try:
        engine = _build(loaded.sources)
        engine.set_input_json(_PROBE_INPUT)
        engine.eval_rule(DECISION_QUERY)
    except Exception as exc:  # regorus raises RuntimeError with a rendered source excerpt
        raise PolicyError(
            f"regorus cannot load the bundle: {_first_lines(exc)}", code="policy_invalid"
        ) from exc


def _first_lines(exc: BaseException, limit: int = 6) -> str:
    """regorus errors end in a long Rust backtrace; keep the rendered source part."""
    text = str(exc).split("Stack backtrace:")[0].strip()
    return " | ".join(line.rstrip() for line in text.splitlines()[:limit] if line.strip())
