"""Refusals into the audit log: every way a request was turned away, and floods folded.

The exchange records each refusal it answers (``ExchangeService``), and the API
records refused attempts on staff routes (a person lacking the role, the
four-eyes rule, a token that does not verify) and on the other routes a request
token opens (a receipt, a citizen's access log). Failed authentications, which
cost their sender nothing, go through one per-process budget
(``failure_budget``): beyond it they are counted by code and recorded once per
second of flood.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from audit import AuditError, AuditLog
from gateway.auditing import audit_event
from gateway.auth.requests import Caller
from gateway.exchange.failure_budget import FOLD_WINDOW_S, FailureBudget
from gateway.exchange.metrics import ExchangeMetrics

__all__ = ["RefusalRecorder"]

log = structlog.get_logger(__name__)


class RefusalRecorder:
    """Appends refusal entries; a failed authentication goes through the flood budget."""

    def __init__(
        self,
        audit_log: AuditLog,
        metrics: ExchangeMetrics,
        clock: Callable[[], datetime],
        *,
        auth_failure_entries_per_s: int,
    ) -> None:
        self.audit_log = audit_log
        self.metrics = metrics
        self.clock = clock
        self.failures = FailureBudget(auth_failure_entries_per_s)
        self._folding: set[asyncio.Task[None]] = set()

    async def record(self, entry: dict[str, Any], **context: Any) -> bool:
        """Append a refusal's entry; if even that fails, log it (the caller's answer is
        an error either way) and say so."""
        try:
            await self.audit_log.append_async(entry)
        except AuditError as exc:
            log.error("audit_append_failed", code=exc.code, detail=exc.detail, **context)
            return False
        return True

    async def auth_failure(self, entry: dict[str, Any], code: str) -> bool:
        """A failed authentication: its own entry within the budget, else folded into
        its second's entry. False only if the append failed."""
        if not self.failures.take():
            self.fold(code)
            return True
        return await self.record(entry, refused=code)

    async def staff(
        self, *, method: str, route: str, status: int, code: str, actor: str | None
    ) -> None:
        """A refused attempt on a staff route (administration, policy, audit): a verified
        person refused (403: a role they lack, the four-eyes rule) under their name;
        a token that does not verify (401) as an anonymous ``auth_failure``. The entry
        names the ``route`` template, never the path, which anyone may fill with text."""
        facts = {"status": status, "problem": code, "method": method, "route": route[:200]}
        if actor is None:
            entry = audit_event("auth_failure", actor="anonymous", outcome="refused", **facts)
            await self.auth_failure(entry, code)
        else:
            await self.record(audit_event("admin", actor=actor, outcome="refused", **facts))

    async def system(
        self,
        *,
        event: str,
        method: str,
        route: str,
        status: int,
        code: str,
        caller: Caller | None,
        subject: str | None = None,
        **facts: Any,
    ) -> bool:
        """A refused request on a route a request token opens besides the exchange's.

        A token refused (401) is an ``auth_failure`` through the flood budget, as on
        the exchange route: named after the token's department and system when its
        signature verified (a replay), anonymous otherwise. A verified system
        refused (403, 404) is recorded as ``event`` (what the route is for) with
        ``outcome`` ``refused``, under its name and the subject's pseudonym. The
        entry names the ``route`` template, never the path, which may hold a
        subject key. False only if the append failed.
        """
        where = {"method": method, "route": route[:200], **facts}
        actor = f"{caller.department}/{caller.system}" if caller is not None else "anonymous"
        if status == 401:
            entry = audit_event(
                "auth_failure", actor=actor, outcome="refused", status=401, problem=code, **where
            )
            return await self.auth_failure(entry, code)
        entry = audit_event(
            event,
            actor=actor,
            outcome="refused",
            status=status,
            problem=code,
            subject=subject,
            **where,
        )
        return await self.record(entry, refused=code)

    def fold(self, code: str) -> None:
        """A failed authentication beyond the budget: counted now, recorded with the
        others of its window."""
        self.metrics.auth_failures_folded.labels(code).inc()
        if self.failures.fold(code, self.clock()):
            asyncio.get_running_loop().call_later(FOLD_WINDOW_S, self._record_folded_later)

    def _record_folded_later(self) -> None:
        task = asyncio.get_running_loop().create_task(self.record_folded())
        self._folding.add(task)
        task.add_done_callback(self._folding.discard)

    async def record_folded(self) -> None:
        """Append the entry for the failures folded since the last one (the gateway
        calls this once more when it stops)."""
        entry = self.failures.drain()
        if entry is not None:
            failures = entry["detail"]["failures"]
            await self.record(entry, refused="auth_failures_folded", failures=failures)
