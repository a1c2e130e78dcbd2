"""Records agreement expiries soon after they happen, from inside the gateway.

An agreement stops deciding anything the moment its window ends: the exchange
reads its status as of the request and the policy checks the window itself.
What this adds is the record: the ``expired`` lifecycle event and the
``agreement_change`` audit entry, written by whichever node gets there first
(``AgreementService.expire_due`` makes that exactly once across nodes).
"""

from __future__ import annotations

import asyncio

from gateway.agreements.service import AgreementService
from gateway.log import get_logger

__all__ = ["EXPIRY_INTERVAL_S", "ExpiryWatch"]

log = get_logger(__name__)

#: How often every process looks for agreements whose window has ended.
EXPIRY_INTERVAL_S = 60.0


class ExpiryWatch:
    """Calls ``expire_due`` when started and then every ``interval_s`` until stopped.

    A failed pass (the database away for a moment) is logged and tried again on
    the next tick: the record comes late, the refusals never do.
    """

    def __init__(
        self, agreements: AgreementService, *, interval_s: float = EXPIRY_INTERVAL_S
    ) -> None:
        self.agreements = agreements
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None

    async def start(self) -> None:
        """Run the first pass now (before the gateway answers), then keep watching."""
        if self._task is not None:
            return
        await self.run_once()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._watch(self._stopping), name="agreement-expiry")

    async def stop(self) -> None:
        """Stop watching; a pass under way finishes first (its transaction is not
        left to a thread nobody waits for while the engine closes)."""
        task, self._task = self._task, None
        if task is None or self._stopping is None:
            return
        self._stopping.set()
        await task

    async def run_once(self) -> int:
        try:
            recorded = await asyncio.to_thread(self.agreements.expire_due)
        except Exception as exc:  # a missed pass is retried on the next tick
            log.warning("agreement_expiry_failed", error=type(exc).__name__)
            return 0
        if recorded:
            log.info("agreements_expired", count=recorded)
        return recorded

    async def _watch(self, stopping: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stopping.wait(), self.interval_s)
                return
            except TimeoutError:
                await self.run_once()
