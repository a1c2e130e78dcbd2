"""The one error tree of the gateway.

Every failure a caller can see is an ``AccordError`` with a stable problem
``code``; ``gateway.api.problems`` turns it into RFC 9457 problem+json in one
place, so nothing below the API layer knows about HTTP exceptions.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AccordError",
    "AgreementError",
    "AuthError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PolicyError",
    "ServiceUnavailableError",
    "SignatureError",
    "ValidationFailed",
]


class AccordError(Exception):
    """Base of every error Accord reports to a caller."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.extra: dict[str, Any] = dict(extra or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class ValidationFailed(AccordError):
    """Input that does not parse or does not match its schema."""

    status = 422
    default_code = "validation_failed"
    title = "Invalid input"


class NotFoundError(AccordError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class ConflictError(AccordError):
    status = 409
    default_code = "conflict"
    title = "Conflict"


class AuthError(AccordError):
    """The caller could not be authenticated (HTTP 401)."""

    status = 401
    default_code = "unauthenticated"
    title = "Authentication failed"


class ForbiddenError(AccordError):
    """The caller is known but may not do this (HTTP 403)."""

    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class SignatureError(AccordError):
    """A signature, key or signed document failed verification."""

    status = 422
    default_code = "signature_invalid"
    title = "Signature verification failed"


class AgreementError(AccordError):
    """A sharing agreement is malformed, unusable or in the wrong state."""

    status = 422
    default_code = "agreement_invalid"
    title = "Agreement rejected"


class PolicyError(AccordError):
    """The policy engine could not give a decision; callers must deny."""

    status = 503
    default_code = "policy_error"
    title = "Policy decision unavailable"


class ServiceUnavailableError(AccordError):
    status = 503
    default_code = "unavailable"
    title = "Service unavailable"
