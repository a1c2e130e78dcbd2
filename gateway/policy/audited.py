"""How a policy workflow step changes the store: locked, audited, then announced.

The base of ``PolicyService`` (``gateway.policy.service``), between the reads
of ``PolicyQueries`` and the workflow steps. Each step runs in one
transaction that appends its ``policy_change`` entry (no entry, no change);
after an activation or rollback commits, the listeners (each node's
``PolicyRuntime``) are told, and none of them can undo it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway.auditing import AuditSink, audit_event
from gateway.db import session_scope
from gateway.dbtypes import utcnow
from gateway.policy.bundle import audit_version
from gateway.policy.queries import PolicyQueries

__all__ = ["VERSION_DETAIL", "AuditedPolicyStore", "Listener"]

# The service's logger, as before this base had a module of its own.
log = structlog.get_logger("gateway.policy.service")
Listener = Callable[[str | None], None]
#: The ``detail`` keys of a ``policy_change`` entry that name policy versions. They
#: are written as the entry's ``policy_version`` is (and an exchange's): the 64 hex
#: digits, without ``sha256:``, so an auditor can match them with a plain comparison.
VERSION_DETAIL = frozenset(
    {"base_version", "previous_version", "from_version", "passed_over", "baseline"}
)


class AuditedPolicyStore(PolicyQueries):
    """The policy store with its audit sink, clock and activation listeners."""

    def __init__(
        self,
        engine: Engine,
        *,
        audit: AuditSink | None,
        opa_bin: Path | None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(engine)
        self.audit = audit
        self.opa_bin = opa_bin
        self.clock = clock
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(new_version)`` after each committed activation or rollback."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- internals -----------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with session_scope(self.engine) as s:
            yield s

    def _audit(self, s: Session, outcome: str, actor: str, version: str, **detail: Any) -> None:
        """Append the step's entry in the step's transaction: no entry, no change."""
        if self.audit is None:
            log.warning("policy_change_unaudited", outcome=outcome, version=version)
            return
        entry = audit_event(
            "policy_change",
            actor=actor,
            outcome=outcome,
            policy_version=audit_version(version),
            **{k: _versions(v) if k in VERSION_DETAIL else v for k, v in detail.items()},
        )
        append_in = getattr(self.audit, "append_in", None)
        if append_in is not None:
            append_in(s.connection(), entry)
        else:
            self.audit.append(entry)

    def _notify(self, version: str | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(version)
            except Exception:  # a listener must not undo a committed activation
                log.exception("policy_listener_failed")


def _versions(value: Any) -> Any:
    """A version, or a list of them, as audit entries carry versions."""
    if isinstance(value, list | tuple):
        return [audit_version(v) for v in value]
    return audit_version(value)
