"""Policy work done once in an evaluator process (``gateway.policy.sandbox.run_job``).

Loading a version (its VM self-check), the officers' proposal checks and the
impact dry-run each evaluate a policy on many inputs, some of them recorded
from traffic. regorus keeps the GIL while it evaluates, so on a thread of the
gateway a policy that is slow on one of those inputs would stall every
request; here it costs an evaluator process, killed at the job's timeout.

Each job takes and returns plain JSON: what crosses back is data, never an
object the parent would have to trust.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from gateway.policy._regorus import Sources, first_lines, new_interpreter, run_interpreter
from gateway.policy.probes import Probe

__all__ = ["run"]


def run(doc: Mapping[str, Any]) -> Any:
    """Run the job ``doc["job"]`` with ``doc["args"]``; raises ``KeyError`` for an unknown job."""
    job: Callable[..., Any] = _JOBS[doc["job"]]
    return job(**doc["args"])


def _sources(pairs: list[list[str]]) -> Sources:
    return tuple((str(path), str(text)) for path, text in pairs)


def _probes(pairs: list[list[str]]) -> list[Probe]:
    return [Probe(str(label), str(payload)) for label, payload in pairs]


def _prepare(sources: list[list[str]], vm: bool, probes: list[list[str]]) -> dict[str, Any]:
    """Loading a version: does it load, and (``vm``) may the VM decide it."""
    from gateway.policy.vm_check import check_sources, vm_verdict

    held = _sources(sources)
    error = check_sources(held)
    if error is not None:
        return {"error": error}
    if not vm:
        return {"program": None, "why": ""}
    program, why = vm_verdict(held, _probes(probes))
    return {"program": base64.b64encode(program).decode() if program else None, "why": why}


def _checks(sources: list[list[str]], probes: list[list[str]]) -> dict[str, Any]:
    """The proposal checks that run the bundle in regorus (``gateway.policy.checks``)."""
    from gateway.policy.decision_check import survey_decisions
    from gateway.policy.vm_check import check_sources, vm_verdict

    held = _sources(sources)
    error = check_sources(held)
    if error is not None:
        return {"load_error": error}
    try:
        survey: dict[str, Any] = {"survey": vars(survey_decisions(held, _probes(probes)))}
    except Exception as exc:  # it loaded a moment ago; report it all the same
        survey = {"survey_error": first_lines(exc, 3)}
    program, why = vm_verdict(held)
    return {"load_error": None, **survey, "vm": program is not None, "vm_why": why}


def _replay(sources: list[list[str]], inputs: list[Any]) -> dict[str, Any]:
    """The impact dry-run: every input's decision value, or its evaluation error."""
    try:
        engine = new_interpreter(_sources(sources))
    except Exception as exc:
        return {"error": _rendered(exc)[:500]}
    out: list[dict[str, Any]] = []
    for doc in inputs:
        try:
            payload = json.dumps(doc, ensure_ascii=False, allow_nan=False)
            out.append({"value": run_interpreter(engine, payload)})
        except Exception as exc:
            out.append({"error": _rendered(exc)[:300]})
    return {"decisions": out}


def _rendered(exc: BaseException) -> str:
    """regorus' message without its Rust backtrace, lines kept."""
    return str(exc).split("Stack backtrace:")[0].strip()


_JOBS: dict[str, Callable[..., Any]] = {"prepare": _prepare, "checks": _checks, "replay": _replay}
