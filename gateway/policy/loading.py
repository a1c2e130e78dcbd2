"""Loading a policy version into the embedded engine: does it load, and may the VM decide it.

``prepare`` runs on a thread of the gateway (``isolation="inline"``);
``prepare_isolated`` runs the same work in an evaluator process
(``gateway.policy.sandbox.run_job``, job ``prepare`` in ``gateway.policy._jobs``),
so that a version slow on some probe, perhaps a recorded input, cannot stall
the gateway while it loads. Either answers a ``Loaded`` version, or the text
of why it does not load. The VM self-check itself is ``gateway.policy.vm_check``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from gateway.policy._regorus import Sources
from gateway.policy.probes import Probe
from gateway.policy.sandbox import JobFailed, VersionSources, run_job
from gateway.policy.vm_check import check_sources, vm_verdict

__all__ = ["PREPARE_TIMEOUT_S", "Loaded", "Mode", "prepare", "prepare_isolated"]

Mode = Literal["vm", "interpreter"]

#: Versions this process has interpreted, and why: a later load of the same
#: version (a reload with other recorded probes) interprets it again, so one
#: version never changes evaluator, and behaviour, from load to load.
_INTERPRETED: dict[str, str] = {}

#: Answers of the ``prepare`` job, by its arguments' SHA-256 (at most 32).
_PREPARED: dict[str, dict[str, Any]] = {}
#: How long loading one version may take in an evaluator process (load + VM self-check).
PREPARE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Loaded:
    """A version the engine holds, and which evaluator decides it."""

    version: str
    sources: Sources
    #: The serialised VM program when the VM decides this version, else None.
    program: bytes | None
    mode: Mode
    why: str

    @cached_property
    def for_evaluators(self) -> VersionSources:
        """What an evaluator process needs to decide for this version."""
        return VersionSources(self.version, self.sources, self.program)


def prepare(version: str, sources: Sources, vm: bool, recorded: Sequence[Probe]) -> Loaded | str:
    """Worker-thread part of an inline ``load``: the loaded version, or why it does not load."""
    error = check_sources(sources)
    if error is not None:
        return error
    forced = _forced_interpreter(version, vm)
    if forced is not None:
        return Loaded(version, sources, None, "interpreter", forced)
    program, why = vm_verdict(sources, recorded)
    return _judged(version, sources, program, why)


def prepare_isolated(
    version: str, sources: Sources, vm: bool, recorded: Sequence[Probe], memory_mib: int
) -> Loaded | str:
    """``prepare`` in an evaluator process (``run_job``), for ``isolation="process"``.

    A self-check that does not finish in time (a policy slow on some probe,
    perhaps a recorded input) leaves the version to the interpreter, which
    needs no self-check, if the version loads at all.
    """
    forced = _forced_interpreter(version, vm)
    args = {
        "sources": [list(pair) for pair in sources],
        "vm": forced is None,
        "probes": [[p.label, p.payload] for p in recorded],
    }
    try:
        out = _prepare_job(args, memory_mib)
    except JobFailed as exc:
        if forced is not None:
            return str(exc)
        forced = f"the VM self-check did not finish ({exc})"
        try:
            out = _prepare_job({**args, "vm": False}, memory_mib)
        except JobFailed as again:
            return str(again)
    if out.get("error") is not None:
        return str(out["error"])
    if forced is not None:
        return Loaded(version, sources, None, "interpreter", forced)
    program = base64.b64decode(out["program"]) if out["program"] else None
    return _judged(version, sources, program, str(out["why"]))


def _prepare_job(args: dict[str, Any], memory_mib: int) -> dict[str, Any]:
    """The ``prepare`` job's answer; the same sources and probes always get the same one."""
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()
    out = _PREPARED.get(key)
    if out is None:
        out = run_job("prepare", args, timeout_s=PREPARE_TIMEOUT_S, memory_mib=memory_mib)
        if len(_PREPARED) >= 32:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = out
    return out


def _forced_interpreter(version: str, vm: bool) -> str | None:
    """Why this version is interpreted whatever the VM self-check would say, if it is."""
    if not vm:
        return "ACCORD_EMBEDDED_VM=false"
    return _INTERPRETED.get(version)


def _judged(version: str, sources: Sources, program: bytes | None, why: str) -> Loaded:
    if program is None:
        _INTERPRETED[version] = why
    return Loaded(version, sources, program, "vm" if program else "interpreter", why)
