"""The narrow interface services use to record audit events, and the entry builder.

Services depend on the ``AuditSink`` Protocol, not on the audit package's
classes, so they can be built with the real ``audit.AuditLog`` in production
and tests alike. An append that raises must stop the operation: callers fail
closed. ``audit_event`` shapes administrative events to the closed entry schema
(``audit/schema.py``): known keys at the top, everything else in ``detail``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy.engine import Connection

__all__ = ["AuditSink", "audit_event"]

#: Top-level entry keys a caller may set (the rest of the closed schema).
_TOP = frozenset(
    {
        "exchange_id",
        "actor",
        "consumer",
        "provider",
        "agreement",
        "dataset",
        "purpose",
        "fields",
        "operations",
        "decision",
        "reasons",
        "policy_version",
        "request_sha256",
        "response_sha256",
        "subject",
        "outcome",
        "status",
        "latency_ms",
        "problem",
    }
)
_MAX_TEXT = 500


class AuditSink(Protocol):
    def append(self, entry: Mapping[str, Any]) -> Any:
        """Append on its own (group-committed); durable when it returns."""

    def append_in(self, conn: Connection, entry: Mapping[str, Any]) -> Any:
        """Append inside the caller's transaction, so the change and its entry commit together."""


def _detail_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v)[:_MAX_TEXT] for v in value][:100]
    return str(value)[:_MAX_TEXT]


def audit_event(event: str, *, actor: str, outcome: str, **fields: Any) -> dict[str, Any]:
    """An entry for ``event``: schema keys kept, other facts moved into ``detail``."""
    entry: dict[str, Any] = {"event": event, "actor": actor, "outcome": outcome}
    detail: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        if key in _TOP:
            entry[key] = value
        else:
            detail[key] = _detail_value(value)
    if detail:
        entry["detail"] = detail
    return entry
