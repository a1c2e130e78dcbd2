"""Circuit breaker, retries, deadline and settings: the state machine and a real provider.

The breaker's clock is injected so its states are driven without sleeping;
the integration tests point a REST connector at ``hostile_server`` and count
the provider's hits to see which calls were made, retried or withheld.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.config import build_connector
from connectors.interface import (
    CircuitOpen,
    ConnectorConfigError,
    ConnectorError,
    FetchContext,
)
from connectors.resilience import CircuitBreaker, Deadline, Resilience, ResilienceSettings
from connectors.rest import RestConnector
from tests.connectors.conftest import hits, reset


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_n_consecutive_failures() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=3, reset_after=10, clock=clock)
    for _ in range(2):
        b.before_call("p")
        b.record_failure()
    assert b.state == "closed"
    b.before_call("p")
    b.record_failure()
    assert b.state == "open"
    with pytest.raises(CircuitOpen) as err:
        b.before_call("p")
    assert err.value.code == "connector_circuit_open"


def test_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(failure_threshold=3, reset_after=10, clock=Clock())
    for _ in range(5):
        b.record_failure()
        b.record_failure()
        b.record_success()
    assert b.state == "closed"


def test_breaker_half_opens_for_exactly_one_trial() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, reset_after=10, clock=clock)
    b.record_failure()
    clock.now += 9.9
    assert b.state == "open"
    clock.now += 0.2
    assert b.state == "half_open"
    b.before_call("p")  # the trial
    with pytest.raises(CircuitOpen):
        b.before_call("p")  # a second caller while the trial runs


def test_failed_trial_reopens_for_a_fresh_window() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, reset_after=10, clock=clock)
    b.record_failure()
    clock.now += 11
    b.before_call("p")
    b.record_failure()
    assert b.state == "open"
    clock.now += 9
    assert b.state == "open"
    clock.now += 2
    assert b.state == "half_open"


def test_successful_trial_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, reset_after=10, clock=clock)
    b.record_failure()
    clock.now += 11
    b.before_call("p")
    b.record_success()
    assert b.state == "closed"
    b.before_call("p")
    b.before_call("p")  # closed: any number of callers


def test_deadline_counts_down_on_its_clock() -> None:
    clock = Clock()
    d = Deadline(2.0, clock=clock)
    assert d.remaining() == pytest.approx(2.0)
    clock.now += 2.5
    assert d.expired()


def cfg(url: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "rest",
        "name": "breaker_test",
        "base_url": url,
        "timeouts": {"connect": 1.0, "read": 1.0, "total": 3.0},
        "retries": {"attempts": 1},
        "breaker": {"failures": 3, "reset_after": 30},
        "entities": {
            m: {"key": "ssn", "path": f"/rest/{m}/{{key}}", "fields": ["ssn"]}
            for m in ("good", "always503", "html", "nothing", "slow")
        },
    }
    base.update(over)
    return base


@pytest.fixture
async def clocked(hostile_url: str) -> AsyncIterator[tuple[RestConnector, Clock]]:
    reset(hostile_url)
    conn = build_connector(cfg(hostile_url))
    assert isinstance(conn, RestConnector)
    clock = Clock()
    conn.resilience = Resilience(conn.name, conn.settings, clock=clock)
    yield conn, clock
    await conn.aclose()


async def code(conn: RestConnector, entity: str) -> str:
    with pytest.raises(ConnectorError) as err:
        await conn.fetch(entity, "12345678901", ["ssn"])
    return err.value.code


async def test_open_breaker_withholds_calls_then_half_opens_and_recovers(
    clocked: tuple[RestConnector, Clock], hostile_url: str
) -> None:
    conn, clock = clocked
    assert [await code(conn, "always503") for _ in range(3)] == ["connector_unavailable"] * 3
    assert await code(conn, "good") == "connector_circuit_open"  # even a healthy entity
    assert hits(hostile_url)["hits"].get("good", 0) == 0
    clock.now += 31
    assert await code(conn, "always503") == "connector_unavailable"  # failed trial
    assert await code(conn, "good") == "connector_circuit_open"  # reopened
    assert hits(hostile_url)["hits"]["always503"] == 4
    clock.now += 31
    assert (await conn.fetch("good", "12345678901", ["ssn"])).record["ssn"] == "12345678901"
    assert conn.resilience.breaker.state == "closed"


async def test_provider_answers_that_are_not_outages_do_not_open_the_breaker(
    clocked: tuple[RestConnector, Clock],
) -> None:
    conn, _ = clocked
    codes = {await code(conn, "html") for _ in range(5)} | {
        await code(conn, "nothing") for _ in range(5)
    }
    assert codes == {"connector_bad_response", "not_found"}
    assert conn.resilience.breaker.state == "closed"


@pytest.mark.parametrize(
    "over",
    [
        {"max_concurrency": 0},
        {"max_concurrency": "many"},
        {"timeouts": {"total": 0}},
        {"timeouts": {"read": -1}},
        {"timeouts": "fast"},
        {"retries": {"attempts": 0}},
        {"retries": {"backoff": -1}},
        {"breaker": {"failures": 0}},
        {"max_response_bytes": 0},
    ],
)
def test_nonsense_resilience_settings_are_refused_at_build_time(over: dict[str, Any]) -> None:
    with pytest.raises(ConnectorConfigError) as err:
        build_connector(cfg("http://127.0.0.1:9", **over))
    assert err.value.code == "connector_config_invalid"


def test_settings_defaults_are_bounded() -> None:
    s = ResilienceSettings.from_config({})
    assert s.total_timeout > 0
    assert s.max_response_bytes > 0
    assert s.retry_attempts >= 1


async def test_cancelled_half_open_trial_does_not_wedge_the_breaker(
    clocked: tuple[RestConnector, Clock],
) -> None:
    conn, clock = clocked
    for _ in range(3):
        await code(conn, "always503")
    clock.now += 31
    trial = asyncio.create_task(conn.fetch("slow", "12345678901", ["ssn"]))
    await asyncio.sleep(0.2)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert conn.resilience.breaker.state == "half_open"
    assert (await conn.fetch("good", "12345678901", ["ssn"])).record["ssn"] == "12345678901"
    assert conn.resilience.breaker.state == "closed"


async def test_exhausted_budget_is_a_timeout_without_blaming_the_provider(
    clocked: tuple[RestConnector, Clock], hostile_url: str
) -> None:
    conn, _ = clocked
    for _ in range(5):
        with pytest.raises(ConnectorError) as err:
            await conn.fetch("good", "12345678901", ["ssn"], FetchContext(timeout=0))
        assert err.value.code == "connector_timeout"
    assert conn.resilience.breaker.state == "closed"
    assert hits(hostile_url)["hits"].get("good", 0) == 0


async def test_unforeseen_fault_inside_a_call_is_still_a_connector_error() -> None:
    res = Resilience("p", ResilienceSettings())

    async def broken(_: Deadline) -> None:
        raise KeyError("surprise")

    with pytest.raises(ConnectorError) as err:
        await res.call(broken, idempotent=True, ctx=None)
    assert err.value.code == "connector_unavailable"
