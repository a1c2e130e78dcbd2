"""The policy layer: Rego decisions for exchanges and the officers' workflow.

The exchange builds an input with ``build_policy_input`` and asks the
``PolicyRuntime`` (the configured ``embedded`` or ``opa`` engine, kept on the
active version) to ``decide``; the ``Decision`` it gets back never raises for
engine faults and is a deny with code ``policy_error`` when no well-formed
decision could be made. ``PolicyService`` is the officers' workflow and the
decision log (docs/policy-engines.md).

The names below are imported on first use (PEP 562), so that a policy
evaluator process (``gateway.policy._evaluator``) can import the few modules it
needs without the database layer the workflow brings in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.policy.bundle import (
        DECISION_QUERY,
        PolicyBundle,
        audit_version,
        bundle_version,
    )
    from gateway.policy.engine import (
        DENY_CODES,
        POLICY_ERROR,
        Decision,
        DenyReason,
        EngineHealth,
        PolicyDenied,
        PolicyEngine,
    )
    from gateway.policy.factory import open_engine
    from gateway.policy.input import build_policy_input, verify_policy_input
    from gateway.policy.runtime import PolicyRuntime
    from gateway.policy.service import PolicyService

__all__ = [
    "DECISION_QUERY",
    "DENY_CODES",
    "POLICY_ERROR",
    "Decision",
    "DenyReason",
    "EngineHealth",
    "PolicyBundle",
    "PolicyDenied",
    "PolicyEngine",
    "PolicyRuntime",
    "PolicyService",
    "audit_version",
    "build_policy_input",
    "bundle_version",
    "open_engine",
    "verify_policy_input",
]

_HOMES = {
    "gateway.policy.bundle": ("DECISION_QUERY", "PolicyBundle", "audit_version", "bundle_version"),
    "gateway.policy.engine": (
        "DENY_CODES",
        "POLICY_ERROR",
        "Decision",
        "DenyReason",
        "EngineHealth",
        "PolicyDenied",
        "PolicyEngine",
    ),
    "gateway.policy.factory": ("open_engine",),
    "gateway.policy.input": ("build_policy_input", "verify_policy_input"),
    "gateway.policy.runtime": ("PolicyRuntime",),
    "gateway.policy.service": ("PolicyService",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
