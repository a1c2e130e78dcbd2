"""Thin helpers over regorus' two evaluators: the interpreter and the compiled VM.

Every object regorus hands out (``Engine``, ``Program``, ``Rvm``) is
"unsendable": it must be used and dropped on the thread that made it. A
compiled program is passed between threads as its serialised bytes instead
(``Program.serialize_binary``), which take about 0.1 ms to read back, so a
version is compiled once and every thread makes its own ``Rvm`` from the bytes.

The VM does not report Rego conflicts (OPA's ``eval_conflict_error``), so what
it compiles is the bundle plus conflict guards (``_regorus_conflicts``), and
``run_vm`` raises ``VmConflict`` rather than return a decision the guards
found a conflict behind.
"""

from __future__ import annotations

import json
from typing import Any

import regorus

from gateway.policy._regorus_conflicts import (
    CONFLICTS_KEY,
    DECISION_KEY,
    Sources,
    VmConflict,
    VmUnguardable,
    guard_sources,
)
from gateway.policy.bundle import DECISION_QUERY

__all__ = [
    "Sources",
    "VmConflict",
    "VmUnguardable",
    "compile_program",
    "first_lines",
    "new_interpreter",
    "new_vm",
    "run_interpreter",
    "run_vm",
]

#: What ``Rvm.execute`` answers when the decision is undefined.
_VM_UNDEFINED = '"<undefined>"'


def new_interpreter(sources: Sources) -> Any:
    """A regorus ``Engine`` holding ``sources``; raises what regorus raises."""
    engine = regorus.Engine()
    for path, text in sources:
        engine.add_policy(path, text)
    return engine


def run_interpreter(engine: Any, payload: str) -> Any:
    """The decision for one JSON input (None when undefined)."""
    engine.set_input_json(payload)
    return engine.eval_rule(DECISION_QUERY)


def compile_program(sources: Sources) -> bytes:
    """Compile the guarded decision for the VM; raises when the VM cannot compile the bundle.

    ``VmUnguardable`` when a rule could conflict where no guard can see it.
    """
    guarded = guard_sources(sources, DECISION_QUERY)
    program = regorus.Program.compile_from_modules("{}", list(guarded.sources), [guarded.entry])
    data: bytes = program.serialize_binary()
    return data


def new_vm(program: bytes) -> Any:
    """An ``Rvm`` for this thread, loaded with a program from ``compile_program``."""
    loaded, _partial = regorus.Program.deserialize_binary(program)
    vm = regorus.Rvm()
    vm.load_program(loaded)
    vm.set_data_json("{}")
    return vm


def run_vm(vm: Any, payload: str) -> Any:
    """The decision for one JSON input (None when undefined, as the interpreter answers).

    Raises ``VmConflict`` when a guarded rule yielded conflicting values: where
    OPA raises ``eval_conflict_error`` the VM gives no decision either.
    """
    vm.set_input_json(payload)
    out: str = vm.execute()
    if out == _VM_UNDEFINED:
        return None
    result = json.loads(out)
    if result[CONFLICTS_KEY]:
        names = ", ".join(sorted(result[CONFLICTS_KEY]))
        raise VmConflict(f"conflicting values for the same input in {names}")
    value = result[DECISION_KEY]
    return None if value == "<undefined>" else value


def first_lines(exc: BaseException, limit: int = 6) -> str:
    """regorus errors end in a long Rust backtrace; keep the rendered source part."""
    text = str(exc).split("Stack backtrace:")[0].strip()
    return " | ".join(line.rstrip() for line in text.splitlines()[:limit] if line.strip())
