"""The policy engine interface and the decision it returns.

One interface (``PolicyEngine``), two implementations: ``embedded`` runs the
Rego in-process, ``opa`` asks a real OPA server. The exchange only ever sees a
``Decision``; every failure to get a well-formed one (undefined result, engine
error, malformed value, timeout) becomes a deny with code ``policy_error`` so
the gateway fails closed without each caller having to remember to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import structlog

from gateway.errors import ForbiddenError, PolicyError
from gateway.policy.bundle import PolicyBundle

__all__ = [
    "DENY_CODES",
    "POLICY_ERROR",
    "Decision",
    "DenyReason",
    "EngineHealth",
    "PolicyDenied",
    "PolicyEngine",
    "decision_from_value",
    "decision_problem",
]

log = structlog.get_logger(__name__)

POLICY_ERROR = "policy_error"
#: Every deny code the shipped policy can report (plus policy_error from the engines).
DENY_CODES: frozenset[str] = frozenset(
    {
        "no_agreement",
        "agreement_inactive",
        "wrong_consumer",
        "dataset_not_covered",
        "field_not_permitted",
        "purpose_not_permitted",
        "classification_exceeds_ceiling",
        "clearance_insufficient",
        "caveat_missing",
        "legal_basis_required",
        "quota_exceeded",
        "aggregate_not_permitted",
        "aggregate_only",
        "aggregate_not_allowed",
        "verify_only",
        "aggregate_below_k",
        "invalid_input",
        POLICY_ERROR,
    }
)


class PolicyDenied(ForbiddenError):
    """The policy denied the exchange; ``extra["reasons"]`` lists every reason."""

    default_code = "policy_denied"
    title = "Denied by policy"


@dataclass(frozen=True, order=True)
class DenyReason:
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Decision:
    """A policy decision. ``obligations`` maps each releasable field to its operation."""

    allow: bool
    deny: tuple[DenyReason, ...]
    obligations: Mapping[str, Mapping[str, Any]]
    level: str | None
    policy_version: str | None
    engine: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.allow and self.deny:
            raise ValueError("a decision cannot both allow and carry deny reasons")
        if not self.allow and not self.deny:
            raise ValueError("a deny decision needs at least one reason")
        frozen = {k: MappingProxyType(dict(v)) for k, v in self.obligations.items()}
        object.__setattr__(self, "obligations", MappingProxyType(frozen))
        object.__setattr__(self, "deny", tuple(sorted(self.deny)))

    @property
    def codes(self) -> tuple[str, ...]:
        """Distinct deny codes, sorted: what a 403 reports."""
        return tuple(sorted({r.code for r in self.deny}))

    @property
    def is_error(self) -> bool:
        return any(r.code == POLICY_ERROR for r in self.deny)

    def verify_allowed(self) -> None:
        """Raise ``PolicyDenied`` (403) or ``PolicyError`` (503) unless allowed."""
        if self.allow:
            return
        reasons = [r.to_json() for r in self.deny]
        extra = {"reasons": reasons, "policy_version": self.policy_version}
        if self.is_error:
            raise PolicyError("the policy engine gave no usable decision", extra=extra)
        raise PolicyDenied("; ".join(r.message for r in self.deny), extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The decision as plain JSON (what the audit entry and receipts carry)."""
        return {
            "allow": self.allow,
            "deny": [r.to_json() for r in self.deny],
            "obligations": {k: dict(v) for k, v in sorted(self.obligations.items())},
            "level": self.level,
            "policy_version": self.policy_version,
        }

    @classmethod
    def error(cls, detail: str, *, policy_version: str | None, engine: str = "") -> Decision:
        """The fail-closed decision; logged loudly because nothing should produce it."""
        log.error("policy_error", detail=detail, policy_version=policy_version, engine=engine)
        return cls(
            allow=False,
            deny=(DenyReason(POLICY_ERROR, detail),),
            obligations={},
            level=None,
            policy_version=policy_version,
            engine=engine,
        )


def decision_from_value(value: Any, *, policy_version: str | None, engine: str) -> Decision:
    """Check an engine's raw result and turn it into a ``Decision``.

    Anything that is not exactly the documented shape is a ``policy_error``
    deny: we never read meaning into a malformed decision.
    """
    problem = decision_problem(value)
    if problem is not None:
        return Decision.error(
            f"malformed decision: {problem}", policy_version=policy_version, engine=engine
        )
    deny = tuple(DenyReason(r["code"], r["message"]) for r in value["deny"])
    return Decision(
        allow=value["allow"] is True,
        deny=deny,
        obligations=value["obligations"] if value["allow"] is True else {},
        level=value["level"],
        policy_version=policy_version,
        engine=engine,
    )


def decision_problem(value: Any) -> str | None:
    """Why ``value`` is not a decision the gateway can act on, or None if it is.

    The one definition of a well-formed decision: ``decision_from_value`` turns
    any value this names a problem in into a ``policy_error`` deny, and the
    automatic checks and the VM self-check judge probe results by it.
    """
    if value is None:
        return "undefined"
    problem = _shape_problem(value)
    if problem is not None:
        return problem
    if value["allow"] is True and value["deny"]:
        return "allow with deny reasons"
    if value["allow"] is not True and not value["deny"]:
        return "deny without a reason"
    return None


def _shape_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "not an object"
    if not isinstance(value.get("allow"), bool):
        return "allow is not a boolean"
    deny = value.get("deny")
    if not isinstance(deny, list):
        return "deny is not an array"
    for r in deny:
        if not (
            isinstance(r, dict)
            and isinstance(r.get("code"), str)
            and isinstance(r.get("message"), str)
        ):
            return "deny reason is not {code, message}"
    obligations = value.get("obligations")
    if not isinstance(obligations, dict):
        return "obligations is not an object"
    for op in obligations.values():
        if not (isinstance(op, dict) and isinstance(op.get("operation"), str)):
            return "obligation is not an operation object"
    if "level" not in value or not (value["level"] is None or isinstance(value["level"], str)):
        return "level is not a string or null"
    return None


@dataclass(frozen=True)
class EngineHealth:
    ok: bool
    engine: str
    policy_version: str | None
    detail: str = ""


@runtime_checkable
class PolicyEngine(Protocol):
    """What the exchange and the workflow need from a policy engine."""

    name: str

    @property
    def version(self) -> str | None:
        """The loaded bundle's version, or None before ``load``."""
        ...

    async def load(self, bundle: PolicyBundle) -> None:
        """Replace the active policy with ``bundle``; raise ``PolicyError`` if it will not load."""
        ...

    async def decide(self, policy_input: Mapping[str, Any]) -> Decision:
        """Decide; never raises for engine faults, returns a ``policy_error`` deny instead."""
        ...

    async def health(self) -> EngineHealth: ...

    async def close(self) -> None: ...
