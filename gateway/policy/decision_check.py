"""The check that a policy version gives a well-formed decision for every probe input.

A bundle can compile, load and pass its own Rego tests and still decide
nothing usable: a ``decision`` that is undefined for every input, or one whose
``allow`` is ``"yes"``. The gateway turns each such result into the
``policy_error`` deny (fail closed), so once active that version answers every
exchange with 503. This check decides every probe input
(``gateway.policy.probes``: the synthetic set plus the recorded inputs the
service passes) on regorus' interpreter and judges each result with the
gateway's own parser (``gateway.policy.engine.decision_problem``). It does not
care whether a probe is allowed or denied, only that the answer is a decision.

An evaluation error is judged by its input. On an input the policy input
schema accepts (what the gateway sends), it is a failure: the exchange would
get ``policy_error``. On a schema-invalid probe it is only counted: regorus'
interpreter raises on ``some k, v in x`` when ``x`` is null, where OPA and the
VM iterate nothing, and either way such an input is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import ValidationFailed
from gateway.policy._regorus import Sources, first_lines, new_interpreter, run_interpreter
from gateway.policy.engine import decision_problem
from gateway.policy.input import verify_policy_input
from gateway.policy.probes import Probe

__all__ = ["DecisionSurvey", "survey_decisions"]


@dataclass(frozen=True)
class DecisionSurvey:
    """How a version answered the probes: counts and the first unusable answer."""

    probes: int
    undefined: int
    malformed: int
    #: Evaluation errors on inputs valid against the policy input schema.
    errors: int
    #: Evaluation errors on schema-invalid probes (counted, not failed).
    invalid_input_errors: int
    first_problem: str | None

    @property
    def ok(self) -> bool:
        return self.first_problem is None

    def describe(self) -> str:
        if self.first_problem is not None:
            counts = f"{self.undefined} undefined, {self.malformed} malformed"
            counts += f", {self.errors} evaluation errors on valid inputs"
            return f"{self.first_problem} ({counts}, of {self.probes} probes)"
        text = f"a well-formed decision for all {self.probes} probes"
        if self.invalid_input_errors:
            text += (
                f" ({self.invalid_input_errors} schema-invalid probes raised an evaluation"
                " error, which fails closed)"
            )
        return text


def survey_decisions(sources: Sources, probes: Sequence[Probe]) -> DecisionSurvey:
    """Decide every probe on the interpreter and judge each result; never stops early.

    Runs on the calling thread with a throwaway engine that never leaves this
    call. Raises what regorus raises if it cannot load ``sources``.
    """
    interpreter = new_interpreter(sources)
    undefined = malformed = errors = tolerated = 0
    first: str | None = None
    for index, probe in enumerate(probes):
        where = f"probe {index} ({probe.label})"
        try:
            value = run_interpreter(interpreter, probe.payload)
        except Exception as exc:
            if not _schema_valid(probe.payload):
                tolerated += 1
                continue
            errors += 1
            first = first or f"evaluation error on {where}: {first_lines(exc, 2)[:300]}"
            continue
        problem = decision_problem(value)
        if problem is None:
            continue
        if value is None:
            undefined += 1
            first = first or f"decision undefined on {where}"
        else:
            malformed += 1
            shown = json.dumps(value, sort_keys=True, default=str)[:200]
            first = first or f"malformed decision on {where}: {problem}: {shown}"
    return DecisionSurvey(len(probes), undefined, malformed, errors, tolerated, first)


def _schema_valid(payload: str) -> bool:
    try:
        verify_policy_input(json.loads(payload))
    except ValidationFailed:
        return False
    return True
