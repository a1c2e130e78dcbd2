"""Records agreement expiries soon after they happen, from inside the gateway.

An agreement stops deciding anything the moment its window ends: the exchange
reads its status as of the request and the policy checks the window itself.
What this adds is the record: the ``expired`` lifecycle event and the
``agreement_change`` audit entry, written by whichever node gets there first
(``AgreementService.expire_due`` makes that exactly once across nodes).
"""

from __future__ import annotations

import asyncio
import contextlib

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

    async def start(self) -> None:
        """Run the first pass now (before the gateway answers), then keep watching."""
        if self._task is not None:
            return
        await self.run_once()
        self._task = asyncio.create_task(self._watch(), name="agreement-expiry")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
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

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.run_once()
