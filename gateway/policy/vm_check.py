"""The check that regorus' VM decides the probe inputs as its interpreter does.

The embedded engine decides on regorus' compiled VM, which is several times
faster than the tree-walking interpreter but younger: it has mis-evaluated
Rego forms the interpreter (and OPA) get right. So before the VM decides
anything for a policy version, every probe input (``gateway.policy.probes``)
is decided by both, and the version is interpreted if they differ on any of
them. The same comparison runs at proposal time (``gateway.policy.checks``)
so an officer sees it before activating.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway.policy._regorus import (
    Sources,
    VmUnguardable,
    compile_program,
    first_lines,
    new_interpreter,
    new_vm,
    run_interpreter,
    run_vm,
)
from gateway.policy.engine import decision_from_value, decision_problem
from gateway.policy.probes import Probe, synthetic_probes

__all__ = ["Disagreement", "Verdict", "check_sources", "compare_vm", "vm_verdict"]

_POLICY_ERROR = "policy_error"
#: regorus reports unknown built-ins only when a rule is evaluated, not when it
#: is added, so loading evaluates the decision once on an empty input.
_PROBE_INPUT = "{}"


@dataclass(frozen=True)
class Disagreement:
    """The first probe the VM and the interpreter decide differently."""

    index: int
    label: str
    interpreter: str
    vm: str

    def describe(self) -> str:
        return (
            f"VM disagrees with the interpreter on probe {self.index} ({self.label}): "
            f"interpreter {self.interpreter}, VM {self.vm}"
        )


@dataclass(frozen=True)
class Verdict:
    """How the VM compared with the interpreter on a probe set."""

    probes: int
    disagreement: Disagreement | None
    #: Probes the interpreter could not decide (an evaluation error, so a
    #: ``policy_error`` deny) and the VM denied: both fail closed, so these
    #: do not count against the VM. (regorus 0.13's interpreter raises on
    #: ``some k, v in x`` when ``x`` is null, where OPA and the VM iterate nothing.)
    interpreter_only_errors: int = 0
    #: Probes the VM could not evaluate (it raised, e.g. at its fixed limit of
    #: 25,000 instructions): the engine hands those to the interpreter, so they
    #: get the interpreter's decision by construction.
    vm_errors: int = 0

    def describe(self) -> str:
        if self.disagreement is not None:
            return self.disagreement.describe()
        text = f"the VM agrees with the interpreter on {self.probes} probes"
        notes = []
        if self.interpreter_only_errors:
            notes.append(
                f"{self.interpreter_only_errors} where the interpreter failed closed"
                " and the VM denied"
            )
        if self.vm_errors:
            notes.append(f"{self.vm_errors} the VM hands to the interpreter")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def __add__(self, other: Verdict) -> Verdict:
        return Verdict(
            self.probes + other.probes,
            self.disagreement or other.disagreement,
            self.interpreter_only_errors + other.interpreter_only_errors,
            self.vm_errors + other.vm_errors,
        )


def compare_vm(
    sources: Sources, program: bytes, probes: Sequence[Probe], *, first_index: int = 0
) -> Verdict:
    """Decide every probe on the interpreter and on the VM; stop at the first difference.

    Probes are numbered from ``first_index`` in what the verdict reports. Runs
    on the calling thread with throwaway engines that never leave this call.
    Raises what regorus raises if the interpreter cannot load ``sources``.
    """
    interpreter = new_interpreter(sources)
    vm = new_vm(program)
    tolerated = handed_over = 0
    for index, probe in enumerate(probes):
        try:
            vm_value = run_vm(vm, probe.payload)
        except Exception:  # the engine asks the interpreter instead: same decision
            handed_over += 1
            continue
        b, shown_b = _outcome_of(vm_value)
        a, shown_a = _outcome(interpreter, probe.payload)
        if a == b:
            continue
        if a == _POLICY_ERROR and isinstance(b, dict) and not b["allow"]:
            tolerated += 1
            continue
        disagreement = Disagreement(first_index + index, probe.label, shown_a, shown_b)
        return Verdict(index + 1, disagreement, tolerated, handed_over)
    return Verdict(len(probes), None, tolerated, handed_over)


def _outcome(interpreter: Any, payload: str) -> tuple[Any, str]:
    """What the exchange would get (the decision as ``decision_from_value`` reads it), shown.

    Every engine error and malformed value is the same fail-closed
    ``policy_error`` deny whatever its message (the engines word their errors
    differently), so it compares as one value; and it is not logged as an
    incident: this is a check, not a decision.
    """
    try:
        value = run_interpreter(interpreter, payload)
    except Exception as exc:
        return _POLICY_ERROR, f"policy_error (evaluation failed: {first_lines(exc, 1)[:200]})"
    return _outcome_of(value)


def _outcome_of(value: Any) -> tuple[Any, str]:
    problem = decision_problem(value)
    if problem is not None:
        return _POLICY_ERROR, f"policy_error (malformed decision: {problem})"
    decision = decision_from_value(value, policy_version=None, engine="").to_json()
    if decision["allow"]:
        shown = f"allow {json.dumps(decision['obligations'], sort_keys=True)}"[:300]
    else:
        shown = f"deny {list(sorted({r['code'] for r in decision['deny']}))}"
    return decision, shown


def check_sources(sources: Sources) -> str | None:
    """Load and probe on the calling thread; return the error text or None."""
    try:
        run_interpreter(new_interpreter(sources), _PROBE_INPUT)
    except Exception as exc:  # regorus raises RuntimeError with a rendered source excerpt
        return first_lines(exc)
    return None


def vm_verdict(sources: Sources, recorded: Sequence[Probe] = ()) -> tuple[bytes | None, str]:
    """The VM program to use for ``sources`` (None: interpret) and why.

    Compiles, then compares the VM with the interpreter on the synthetic
    probes (cached per bundle: the same sources always give the same answer)
    and on ``recorded``. Runs on the calling thread; every regorus object it
    makes is dropped before it returns. Never raises.
    """
    try:
        program = compile_program(sources)
    except VmUnguardable as exc:
        return None, f"a rule may yield conflicting values where the VM cannot check it ({exc})"
    except Exception as exc:
        return None, f"the VM cannot compile this version ({first_lines(exc, 3)})"
    try:
        synthetic = _synthetic_verdict(sources, program)
        if synthetic.disagreement is not None:
            return None, synthetic.describe()
        own = compare_vm(sources, program, recorded, first_index=synthetic.probes)
    except Exception as exc:
        return None, f"the VM self-check failed ({first_lines(exc, 3)})"
    if own.disagreement is not None:
        return None, own.describe()
    return program, (synthetic + own).describe()


@lru_cache(maxsize=32)
def _synthetic_verdict(sources: Sources, program: bytes) -> Verdict:
    return compare_vm(sources, program, synthetic_probes())
