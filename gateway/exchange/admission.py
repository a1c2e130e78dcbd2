"""Admitting an exchange: its token, its request, its agreement, its single use and quota.

The token is verified before the body is parsed; a token whose body does not
parse is still spent. What admission reads (the caller's key, department and
agreement) is checked against the ``StateCache`` generation, so a revoked key or
suspended agreement stops the very next exchange.

Where the steps run depends on the store (``store_steps``). On SQLite all of it
runs on the loop holding the write turn, after a generation read. On PostgreSQL
the checks run on the loop from the cache as last read (on the rare miss, on a
worker thread that loads the rows), and then the claim, awaited on an async
connection (``pg_steps``), spends the jti, reserves the quota and returns the
generation in one round trip. Only when that generation is not the one the
checks used do they run again (``_admit_awaiting``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime
from typing import Any, TypeVar

import structlog

from gateway.agreements.models import Agreement
from gateway.agreements.service import AgreementService
from gateway.auditing import verify_log_intact
from gateway.auth.requests import Caller, RequestTokenVerifier
from gateway.errors import AccordError, AuthError, NotFoundError
from gateway.exchange.counters import QuotaReservation, ReplayCache, release_quota
from gateway.exchange.pg_steps import PgSteps
from gateway.exchange.request_step import parse_request
from gateway.exchange.schemas import ExchangeRequest
from gateway.exchange.store_steps import StoreSteps, store_errors
from gateway.exchange.trace import Trace
from gateway.registry.models import Department
from gateway.registry.service import RegistryService
from gateway.statecache import CacheMiss, StateCache

__all__ = ["Admission"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

Admitted = tuple[Department, QuotaReservation | None, float]


class Admission:
    """Authenticates, parses, resolves and claims one exchange."""

    def __init__(
        self,
        *,
        verifier: RequestTokenVerifier,
        agreements: AgreementService,
        registry: RegistryService,
        replay: ReplayCache,
        state: StateCache,
        pg: PgSteps | None = None,
    ) -> None:
        self.verifier = verifier
        self.agreements = agreements
        self.registry = registry
        self.replay = replay
        self.state = state
        self.pg = pg
        self.store = StoreSteps(replay.engine)

    async def admit(
        self, trace: Trace, token: str | None, method: str, path: str, body: bytes, now: datetime
    ) -> Admitted:
        """Sets the trace's state, caller, request and agreement; returns the caller's
        department, the quota reservation and when the "auth" stage ended."""
        await verify_log_intact(self.store.engine)
        if not token:
            raise AuthError("a request token is required", code="missing_token")
        started = time.perf_counter()
        try:
            if self.pg is not None:
                return await self._admit_awaiting(
                    self.pg, trace, token, method, path, body, now, started
                )

            def admit() -> Admitted:
                with store_errors():
                    trace.state = self.state.refresh()
                    caller = self._verify(trace.state, token, method, path, body, now)
                    trace.caller = caller
                    try:
                        trace.request = parse_request(body)
                    except AccordError:
                        self._claim(caller, None, now)  # still single use
                        raise
                    t = trace.stage("auth", started)
                    trace.agreement, department = self._lookups(trace.state, caller, trace.request)
                    return department, self._claim(caller, trace.agreement, now), t

            return await self.store.run(admit)
        finally:
            if trace.caller is not None:
                structlog.contextvars.bind_contextvars(consumer=trace.caller.department)

    async def give_back(self, reservation: QuotaReservation) -> None:
        """Return a refused exchange's quota; best effort, and never in the caller's way
        (a counter left one too high only errs on the side of refusing)."""
        if self.pg is not None:
            await self.pg.release(reservation)
            return
        try:
            await self.store.run(release_quota, self.agreements.engine, reservation, patience_s=1.0)
        except AccordError:
            log.warning("quota_not_given_back", agreement=reservation.agreement_id)

    async def _admit_awaiting(
        self,
        pg: PgSteps,
        trace: Trace,
        token: str,
        method: str,
        path: str,
        body: bytes,
        now: datetime,
        started: float,
    ) -> Admitted:
        """Checks against the cached state, then one claim statement that also returns
        the generation: when it moved since the cache was filled, the checks run
        again on fresh rows. A refusal by the cache is confirmed against a fresh read
        first, so a key registered a moment ago is not refused from an old cache."""
        cached = self.state.current()
        known, state = cached if cached is not None else await self._fresh(pg)

        async def check(state: dict[Hashable, Any]) -> Caller:
            caller = await _from_cache(self._verify, state, token, method, path, body, now)
            trace.state, trace.caller = state, caller
            return caller

        try:
            caller = await check(state)
        except AuthError:
            if cached is None:
                raise
            known, state = await self._fresh(pg)
            if known == cached[0]:
                raise
            caller = await check(state)
        try:
            trace.request = parse_request(body)
        except AccordError:
            _, seen = await pg.claim(caller.department, caller.jti, caller.replay_until, None, now)
            if seen != known:  # a key revoked meanwhile is the answer, not the body
                await check(self.state.adopt(seen))
            raise
        t = trace.stage("auth", started)
        trace.agreement, department = await _from_cache(self._lookups, state, caller, trace.request)
        counted = _counted(caller, trace.agreement)
        reservation, seen = await pg.claim(
            caller.department, caller.jti, caller.replay_until, counted, now
        )
        if seen != known:
            department, reservation = await self._recheck(
                pg, trace, check, seen, counted, reservation, now
            )
        return department, reservation, t

    async def _fresh(self, pg: PgSteps) -> tuple[int, dict[Hashable, Any]]:
        generation = await pg.generation()
        return generation, self.state.adopt(generation)

    async def _recheck(
        self,
        pg: PgSteps,
        trace: Trace,
        check: Callable[[dict[Hashable, Any]], Awaitable[Caller]],
        seen: int,
        counted: str | None,
        reservation: QuotaReservation | None,
        now: datetime,
    ) -> tuple[Department, QuotaReservation | None]:
        """The claim saw a newer generation than the checks used: check again on it.
        The jti stays spent; the quota follows the agreement as it is now."""
        assert trace.request is not None
        try:
            caller = await check(self.state.adopt(seen))
            trace.agreement, department = await _from_cache(
                self._lookups, trace.state, caller, trace.request
            )
            recounted = _counted(caller, trace.agreement)
            if recounted != counted:
                if reservation is not None:
                    await pg.release(reservation)
                reservation = None
                if recounted is not None:
                    reservation = await pg.reserve(recounted, now)
        except AccordError:
            if reservation is not None:
                await pg.release(reservation)
            raise
        return department, reservation

    def _verify(
        self,
        state: dict[Hashable, Any],
        token: str,
        method: str,
        path: str,
        body: bytes,
        now: datetime,
    ) -> Caller:
        return self.verifier.verify(
            token, method=method, path=path, body=body, now=now, defer_replay=True, state=state
        )

    def _lookups(
        self, state: dict[Hashable, Any], caller: Caller, request: ExchangeRequest
    ) -> tuple[Agreement | None, Department]:
        def load_agreement() -> Agreement | None:
            try:
                return self.agreements.get(request.agreement, request.agreement_version)
            except NotFoundError:
                return None

        agreement = StateCache.get(
            state,
            ("agreement", request.agreement, request.agreement_version),
            load_agreement,
            keep=_exists,
        )
        department = StateCache.get(
            state,
            ("department", caller.department),
            lambda: self.registry.get_department(caller.department),
        )
        return agreement, department

    def _claim(
        self, caller: Caller, agreement: Agreement | None, now: datetime
    ) -> QuotaReservation | None:
        """Spend the token's jti and, for the agreement's consumer, reserve its quota."""
        return self.replay.claim(
            caller.department, caller.jti, caller.replay_until, _counted(caller, agreement), now
        )


def _exists(row: Agreement | None) -> bool:
    """An agreement id the caller names that does not exist is not kept in the cache."""
    return row is not None


def _counted(caller: Caller, agreement: Agreement | None) -> str | None:
    """The agreement whose quota this exchange takes: only its consumer's exchanges count."""
    if agreement is not None and agreement.consumer == caller.department:
        return agreement.agreement_id
    return None


async def _from_cache(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the loop from cached rows; on a miss, again on a worker thread,
    which may wait for the database to load them."""
    try:
        with StateCache.hits_only():
            return fn(*args)
    except CacheMiss:
        pass

    def loading() -> T:
        with store_errors():
            return fn(*args)

    return await asyncio.to_thread(loading)
