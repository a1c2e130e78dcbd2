"""Timeouts, retries, a circuit breaker and a concurrency cap around provider calls.

A slow or failing department system must not take the gateway down with it:
every call runs under an overall deadline; only idempotent calls are retried,
and only on transient faults (connect errors, 502/503/504, 429 with
Retry-After); the breaker sits *outside* the retries so one logical call
counts once; a semaphore caps how many calls one provider gets at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from connectors.interface import (
    CircuitOpen,
    ConnectorConfigError,
    ConnectorError,
    ConnectorTimeout,
    ConnectorUnavailable,
    FetchContext,
)

__all__ = [
    "CircuitBreaker",
    "Deadline",
    "Resilience",
    "ResilienceSettings",
    "RetryableFault",
    "config_count",
]

T = TypeVar("T")


class RetryableFault(ConnectorError):
    """A transient fault worth retrying; ``retry_after`` comes from the provider."""

    code = "connector_unavailable"
    transient = True

    def __init__(
        self,
        detail: str,
        *,
        connector: str | None = None,
        retry_after: float | None = None,
        final: ConnectorError | None = None,
    ) -> None:
        super().__init__(detail, connector=connector)
        self.retry_after = retry_after
        self.final = final


class Deadline:
    """An absolute point in (monotonic) time a call must finish by."""

    __slots__ = ("_clock", "at")

    def __init__(self, budget: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at = clock() + budget

    def remaining(self) -> float:
        return self.at - self._clock()

    def expired(self) -> bool:
        return self.remaining() <= 0


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures → half-open.

    Half-open lets one trial call through after ``reset_after`` seconds; its
    success closes the breaker, its failure reopens it. The clock is an
    argument so tests can drive the states without sleeping.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_after:
            return "half_open"
        return "open"

    def before_call(self, connector: str) -> None:
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_running):
            raise CircuitOpen("provider failed repeatedly; calls are paused", connector=connector)
        if state == "half_open":
            self._trial_running = True

    def abandon_trial(self) -> None:
        """A call ended without a verdict (cancelled): let the next caller try."""
        self._trial_running = False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        self._trial_running = False
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()


@dataclass(frozen=True, slots=True)
class ResilienceSettings:
    """The knobs every connector config shares (``timeouts``, ``retries`` …)."""

    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    total_timeout: float = 10.0
    retry_attempts: int = 3
    retry_backoff: float = 0.05
    retry_max_wait: float = 2.0
    breaker_failures: int = 5
    breaker_reset_after: float = 30.0
    max_concurrency: int = 16
    max_response_bytes: int = 4 * 1024 * 1024

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ResilienceSettings:
        """Read the shared knobs; a wrong type or a non-positive value is a config error.

        A zero concurrency cap or timeout would not fail loudly: every call
        would simply hang until its deadline, so it is refused at build time.
        """
        name = str(config.get("name", "connector"))
        sections = {k: config.get(k, {}) or {} for k in ("timeouts", "retries", "breaker")}
        bad_section = sorted(k for k, v in sections.items() if not isinstance(v, dict))
        if bad_section:
            raise ConnectorConfigError(f"{bad_section[0]} must be a map", connector=name)
        d = cls()

        def read(path: str, default: float, cast: type[float] | type[int]) -> Any:
            section, _, key = path.rpartition(".")
            raw = sections[section].get(key, default) if section else config.get(key, default)
            try:
                # JSON's true is an int to Python: a boolean is no count or duration.
                if isinstance(raw, bool) or (cast is int and isinstance(raw, float)):
                    raise TypeError(type(raw).__name__)
                return cast(raw)
            except (TypeError, ValueError) as exc:
                kind = "a whole number" if cast is int else "a number"
                raise ConnectorConfigError(f"{path} must be {kind}", connector=name) from exc

        settings = cls(
            connect_timeout=read("timeouts.connect", d.connect_timeout, float),
            read_timeout=read("timeouts.read", d.read_timeout, float),
            total_timeout=read("timeouts.total", d.total_timeout, float),
            retry_attempts=read("retries.attempts", d.retry_attempts, int),
            retry_backoff=read("retries.backoff", d.retry_backoff, float),
            retry_max_wait=read("retries.max_wait", d.retry_max_wait, float),
            breaker_failures=read("breaker.failures", d.breaker_failures, int),
            breaker_reset_after=read("breaker.reset_after", d.breaker_reset_after, float),
            max_concurrency=read("max_concurrency", d.max_concurrency, int),
            max_response_bytes=read("max_response_bytes", d.max_response_bytes, int),
        )
        positive = {
            "timeouts.connect": settings.connect_timeout,
            "timeouts.read": settings.read_timeout,
            "timeouts.total": settings.total_timeout,
            "retries.attempts": settings.retry_attempts,
            "breaker.failures": settings.breaker_failures,
            "max_concurrency": settings.max_concurrency,
            "max_response_bytes": settings.max_response_bytes,
        }
        bad = sorted(k for k, v in positive.items() if not v > 0)
        if bad or settings.retry_backoff < 0 or settings.breaker_reset_after < 0:
            raise ConnectorConfigError(
                f"settings must be positive: {bad or ['retries.backoff/breaker.reset_after']}",
                connector=name,
            )
        return settings


def config_count(config: Mapping[str, Any], key: str, default: int, connector: str) -> int:
    """``config[key]`` as a whole number above zero (a placeholder's text counts too):
    a boolean, a fraction, a word or zero is a config error, found when built."""
    raw = config.get(key, default)
    try:
        if isinstance(raw, bool | float):
            raise TypeError(type(raw).__name__)
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise ConnectorConfigError(f"{key} must be a whole number", connector=connector) from exc
    if value <= 0:
        raise ConnectorConfigError(f"{key} must be positive", connector=connector)
    return value


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryableFault)


class Resilience:
    """Runs one provider call under deadline, cap, breaker and (maybe) retries."""

    def __init__(
        self,
        connector: str,
        settings: ResilienceSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connector = connector
        self.settings = settings
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_reset_after, clock=clock
        )
        self._slots = asyncio.Semaphore(settings.max_concurrency)

    def deadline(self, ctx: FetchContext | None) -> Deadline:
        budget = self.settings.total_timeout
        if ctx is not None and ctx.timeout is not None:
            budget = min(budget, ctx.timeout)
        return Deadline(budget)

    def _wait(self, deadline: Deadline) -> Callable[[RetryCallState], float]:
        s = self.settings

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            delay: float = min(
                s.retry_backoff * (2 ** (state.attempt_number - 1)), s.retry_max_wait
            )
            if isinstance(exc, RetryableFault) and exc.retry_after is not None:
                delay = float(exc.retry_after)
            if delay >= deadline.remaining() or delay > s.retry_max_wait:
                # Waiting would overrun the deadline: give up now with the real fault.
                raise _final(exc, self.connector)
            return delay

        return wait

    async def call(
        self,
        operation: Callable[[Deadline], Awaitable[T]],
        *,
        idempotent: bool,
        ctx: FetchContext | None,
    ) -> T:
        """Run ``operation``; faults surface as ``ConnectorError`` subclasses only."""
        deadline = self.deadline(ctx)
        if deadline.expired():
            # The exchange spent its budget elsewhere: not the provider's fault.
            raise ConnectorTimeout("no time left for the provider call", connector=self.connector)
        self.breaker.before_call(self.connector)
        try:
            async with asyncio.timeout(max(deadline.remaining(), 0.0)):
                async with self._slots:
                    result = await self._attempts(operation, deadline, idempotent)
        except TimeoutError as exc:
            self.breaker.record_failure()
            raise ConnectorTimeout(
                "provider did not answer within the deadline", connector=self.connector
            ) from exc
        except ConnectorError as exc:
            if exc.transient or isinstance(exc, RetryableFault):
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
            if isinstance(exc, RetryableFault):
                raise _final(exc, self.connector) from exc
            raise
        except asyncio.CancelledError:
            # Our caller went away; that says nothing about the provider.
            self.breaker.abandon_trial()
            raise
        except Exception as exc:
            # The boundary holds even for faults no branch above foresaw.
            self.breaker.record_failure()
            raise ConnectorUnavailable(
                f"provider call failed ({type(exc).__name__})", connector=self.connector
            ) from exc
        self.breaker.record_success()
        return result

    async def _attempts(
        self, operation: Callable[[Deadline], Awaitable[T]], deadline: Deadline, idempotent: bool
    ) -> T:
        attempts = self.settings.retry_attempts if idempotent else 1
        try:
            # Most calls succeed (or fail for good) at once: building a retry
            # loop for them would cost more CPU than the call itself.
            return await operation(deadline)
        except RetryableFault as exc:
            if attempts <= 1:
                raise
            first: RetryableFault | None = exc

        async def replay_first_then_call(deadline: Deadline) -> T:
            # The retry loop starts from the fault already seen, so it counts
            # attempts and computes waits exactly as if it had made that call.
            nonlocal first
            if first is not None:
                fault, first = first, None
                raise fault
            return await operation(deadline)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait(deadline),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await replay_first_then_call(deadline)
        raise AssertionError("unreachable: tenacity reraises the last fault")


def _final(exc: BaseException | None, connector: str) -> ConnectorError:
    """The error the caller sees once retrying stops."""
    if isinstance(exc, RetryableFault):
        if exc.final is not None:
            return exc.final
        return ConnectorUnavailable(exc.detail, connector=connector)
    if isinstance(exc, ConnectorError):
        return exc
    return ConnectorUnavailable("provider call failed", connector=connector)
