"""The policy layer: Rego decisions for exchanges and the officers' workflow.

The exchange builds an input with ``build_policy_input`` and asks the
``PolicyRuntime`` (the configured ``embedded`` or ``opa`` engine, kept on the
active version) to ``decide``; the ``Decision`` it gets back never raises for
engine faults and is a deny with code ``policy_error`` when no well-formed
decision could be made. ``PolicyService`` is the officers' workflow and the
decision log (docs/policy-engines.md).
"""

from __future__ import annotations

from gateway.policy.bundle import DECISION_QUERY, PolicyBundle, audit_version, bundle_version
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
