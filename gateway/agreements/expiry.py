"""Records agreement expiries and takeovers soon after they happen, from inside the gateway.

An agreement stops deciding anything the moment its window ends: the exchange
reads its status as of the request and the policy checks the window itself.
What this adds is the record: the ``expired`` lifecycle event and the
``agreement_change`` audit entry, written by whichever node gets there first
(``AgreementService.expire_due`` makes that exactly once across nodes).

A version submitted before its ``valid_from`` waits while the version in force
keeps deciding; at ``valid_from`` it takes over (``take_over_due``: the older
version's ``superseded`` event and entry, once across nodes). Recording it also
moves the state generation, which is what makes every node drop the older
version it has cached, so the watch wakes at the takeover's own time rather
than at its next tick.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from gateway.agreements.service import AgreementService
from gateway.log import get_logger

__all__ = ["EXPIRY_INTERVAL_S", "SCHEDULE_POLL_S", "ExpiryWatch"]

log = get_logger(__name__)

#: How often every process looks for agreements whose window has ended.
EXPIRY_INTERVAL_S = 60.0
#: How often every process looks whether agreement state changed (one counter read),
#: to learn of a version submitted on any node that will take over at its valid_from.
SCHEDULE_POLL_S = 1.0
#: The shortest wait between passes (a takeover due now is taken by the next pass).
_MIN_WAIT_S = 0.01


class ExpiryWatch:
    """Calls ``expire_due`` and ``take_over_due`` when started, then every
    ``interval_s`` and at each takeover's ``valid_from``, until stopped.

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
        """Record the expiries and takeovers due; returns how many this pass recorded."""
        recorded = 0
        for name, due in (
            ("expired", self.agreements.expire_due),
            ("taken_over", self.agreements.take_over_due),
        ):
            try:
                count = await asyncio.to_thread(due)
            except Exception as exc:  # a missed pass is retried on the next tick
                log.warning("agreement_lifecycle_pass_failed", kind=name, error=type(exc).__name__)
                continue
            if count:
                log.info(f"agreements_{name}", count=count)
            recorded += count
        return recorded

    async def _schedule(self) -> tuple[int | None, datetime | None]:
        """The state generation and, as of it, when the next waiting version takes over."""
        try:
            generation = await asyncio.to_thread(self.agreements.state_generation)
            due = await asyncio.to_thread(self.agreements.next_takeover)
        except Exception as exc:  # the tick still comes
            log.warning("agreement_schedule_failed", error=type(exc).__name__)
            return None, None
        return generation, due

    async def _watch(self, stopping: asyncio.Event) -> None:
        """Pass every ``interval_s``, and at each takeover's own time.

        A version submitted on any node moves the state generation; the watch
        reads that one counter every ``SCHEDULE_POLL_S`` and, when it moved,
        looks again for the next takeover, so a takeover is recorded at its
        ``valid_from`` even when it was submitted elsewhere a moment before.
        """
        loop = asyncio.get_running_loop()
        tick_at = loop.time() + self.interval_s
        seen, due = await self._schedule()
        while True:
            wait = min(tick_at - loop.time(), SCHEDULE_POLL_S)
            if due is not None:
                wait = min(wait, (due - self.agreements.clock()).total_seconds())
            try:
                await asyncio.wait_for(stopping.wait(), max(_MIN_WAIT_S, wait))
                return
            except TimeoutError:
                pass
            taking_over = due is not None and self.agreements.clock() >= due
            if taking_over or loop.time() >= tick_at:
                await self.run_once()
                tick_at = loop.time() + self.interval_s
                seen, due = await self._schedule()
                if due is not None and self.agreements.clock() >= due:
                    due = None  # the pass failed to record it: retried at the tick, not in a spin
                continue
            try:
                generation = await asyncio.to_thread(self.agreements.state_generation)
            except Exception as exc:  # looked at again on the next poll
                log.warning("agreement_schedule_failed", error=type(exc).__name__)
                continue
            if generation != seen:
                seen, due = await self._schedule()
