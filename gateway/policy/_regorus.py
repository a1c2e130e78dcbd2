"""Thin helpers over regorus' two evaluators: the interpreter and the compiled VM.

Every object regorus hands out (``Engine``, ``Program``, ``Rvm``) is
"unsendable": it must be used and dropped on the thread that made it. A
compiled program is passed between threads as its serialised bytes instead
(``Program.serialize_binary``), which take about 0.1 ms to read back, so a
version is compiled once and every thread makes its own ``Rvm`` from the bytes.
"""

from __future__ import annotations

import json
from typing import Any

import regorus

from gateway.policy.bundle import DECISION_QUERY

__all__ = [
    "Sources",
    "compile_program",
    "first_lines",
    "new_interpreter",
    "new_vm",
    "run_interpreter",
    "run_vm",
]

Sources = tuple[tuple[str, str], ...]

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
    """Compile the decision for the VM; raises when the VM cannot compile the bundle."""
    program = regorus.Program.compile_from_modules("{}", list(sources), [DECISION_QUERY])
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
    """The decision for one JSON input (None when undefined, as the interpreter answers)."""
    vm.set_input_json(payload)
    out: str = vm.execute()
    return None if out == _VM_UNDEFINED else json.loads(out)


def first_lines(exc: BaseException, limit: int = 6) -> str:
    """regorus errors end in a long Rust backtrace; keep the rendered source part."""
    text = str(exc).split("Stack backtrace:")[0].strip()
    return " | ".join(line.rstrip() for line in text.splitlines()[:limit] if line.strip())
