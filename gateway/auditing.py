"""The narrow interface services use to record audit events, and the entry builder.

Services depend on the ``AuditSink`` Protocol, not on the audit package's
classes, so they can be built with the real ``audit.AuditLog`` in production
and tests alike. An append that raises must stop the operation: callers fail
closed. ``audit_event`` shapes administrative events to the closed entry schema
(``audit/schema.py``): known keys at the top, everything else in ``detail``.

``verify_log_intact`` is the exchange path's check that the log is not known to be
damaged, ``audit_readiness`` what ``/readyz`` says of the log, and ``audit_watch``
the node's background watch on the log (``audit.watch.LogWatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import Connection, Engine

from audit.errors import AuditError
from audit.health import health_of
from audit.probe import probe_write
from audit.status import poll_damage
from audit.watch import LogWatch
from gateway.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from audit import AuditLog
    from gateway.settings import Settings

__all__ = [
    "AuditSink",
    "audit_event",
    "audit_readiness",
    "audit_watch",
    "verify_log_intact",
]

log = logging.getLogger("gateway.auditing")

#: How often the exchange path reads the damage marker other nodes may have left:
#: one exchange in this many seconds pays a one-row read on a worker thread.
DAMAGE_POLL_S = 2.0
#: How often ``/readyz`` may touch the store for the log (anyone may call it).
READINESS_POLL_S = 1.0

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


async def verify_log_intact(engine: Engine) -> None:
    """Raise 503 ``audit_log_damaged`` while the log is known to be damaged.

    An attribute read, except that every ``DAMAGE_POLL_S`` one caller reads the
    marker first; until one such read has worked (just after startup) every caller
    does, and fails closed if it cannot."""
    health = health_of(engine)
    if health.poll_due(DAMAGE_POLL_S):
        try:
            await asyncio.to_thread(poll_damage, engine)
        except AuditError as exc:
            if not health.polled:
                raise ServiceUnavailableError(
                    "cannot tell whether the audit log is damaged; nothing was released",
                    code="audit_unavailable",
                ) from exc
            log.warning("audit damage marker not read: %s", exc.detail)
    damage = health.damage
    if damage is not None:
        # (``audit.status.DAMAGED_CODE``, spelt out: the route's documented codes are
        # checked against the codes raised here.)
        raise ServiceUnavailableError(damage.detail, code="audit_log_damaged")


async def audit_readiness(engine: Engine) -> str:
    """``ok``, or ``error: <code>: <why>``: the log is known to be damaged, or the
    last append or write probe failed. The probe runs at most every
    ``READINESS_POLL_S``, so a store that takes appends again is seen without any
    exchange arriving (none does while the gateway is unready)."""
    health = health_of(engine)
    if health.poll_due(READINESS_POLL_S):
        try:
            await asyncio.to_thread(poll_damage, engine)
        except AuditError as exc:
            log.warning("audit damage marker not read: %s", exc.detail)
        if health.damage is None:  # a stopped log is not probed: it takes nothing anyway
            with contextlib.suppress(AuditError):  # recorded in ``health.failure``
                await asyncio.to_thread(probe_write, engine)
        if not health.polled:
            return "error: audit_unavailable: the damage marker cannot be read"
    problem = health.damage or health.failure
    if problem is None:
        return "ok"
    return f"error: {problem.code}: {problem.detail}"


def audit_watch(audit_log: AuditLog, settings: Settings) -> LogWatch:
    """The node's watch on its log: verify new entries every
    ``audit_verify_interval_s``, read the damage marker every ``DAMAGE_POLL_S`` (so a
    node that serves no exchanges stops appending too). Start it with the services
    and stop it with them."""
    return LogWatch(
        audit_log, verify_interval_s=settings.audit_verify_interval_s, poll_interval_s=DAMAGE_POLL_S
    )
