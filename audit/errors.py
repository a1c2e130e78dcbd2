"""The audit package's own error tree.

The audit package stands alone (an auditor installs it without the gateway), so it
cannot use ``gateway.errors``. Every error carries a stable ``code`` so the gateway
can map it to problem+json, and callers can fail closed on ``AuditUnavailable``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuditError",
    "AuditUnavailable",
    "EntryInvalid",
    "NotFound",
    "ProofError",
    "SignatureInvalid",
    "WitnessRefused",
]


class AuditError(Exception):
    """Base of every error raised by the audit package."""

    default_code: ClassVar[str] = "audit_error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class AuditUnavailable(AuditError):
    """The store refused or could not take the write: callers must fail closed."""

    default_code = "audit_unavailable"


class EntryInvalid(AuditError):
    """An entry given to ``append`` does not match the entry schema."""

    default_code = "audit_entry_invalid"


class NotFound(AuditError):
    """A sequence number, exchange or tree size the log does not hold."""

    default_code = "audit_not_found"


class ProofError(AuditError):
    """An inclusion or consistency proof does not verify, or cannot be built."""

    default_code = "audit_proof_invalid"


class SignatureInvalid(AuditError):
    """A signed note, checkpoint or cosignature does not verify."""

    default_code = "audit_signature_invalid"


class WitnessRefused(AuditError):
    """A witness would not cosign (not an extension of what it saw, bad proof, bad key)."""

    default_code = "audit_witness_refused"
