"""The narrow interface services use to record audit events.

Services depend on this Protocol, not on the audit package's classes, so they
can be built with the real ``audit.AuditLog`` in production and tests alike.
An append that raises must stop the operation: callers fail closed.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["AuditSink"]


class AuditSink(Protocol):
    def append(self, entry: dict[str, Any]) -> Any: ...
