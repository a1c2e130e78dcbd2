"""Problem codes of the officers' policy workflow (each a stable ``AccordError`` code).

``PolicyRejected`` (``policy_rejected``, failed automatic checks) lives in
``gateway.policy.checks`` next to the checks that raise it.
"""

from __future__ import annotations

from gateway.errors import ConflictError, ForbiddenError, NotFoundError, ServiceUnavailableError

__all__ = [
    "ChecksUnavailable",
    "FourEyesViolation",
    "NothingToRollBack",
    "PolicyNotFound",
    "PolicyStateConflict",
]


class PolicyNotFound(NotFoundError):
    default_code = "policy_not_found"
    title = "Policy version not found"


class PolicyStateConflict(ConflictError):
    """The version is not in a state that allows this step (codes name the state needed)."""

    default_code = "policy_state_conflict"
    title = "Policy version is in the wrong state"


class FourEyesViolation(ForbiddenError):
    """The proposer of a version tried to approve it; a second officer must."""

    default_code = "four_eyes_required"
    title = "A second officer must approve"


class NothingToRollBack(ConflictError):
    default_code = "nothing_to_roll_back"
    title = "No earlier active version"


class ChecksUnavailable(ServiceUnavailableError):
    """The ``opa`` binary the checks need is not configured: nothing can be approved."""

    default_code = "policy_checks_unavailable"
    title = "Policy checks unavailable"
