"""The load generator of ``bench.bench_exchange``: closed loop for the peak, open loop for pacing.

Requests are built (and for Accord, their single-use tokens signed) before a
timed window starts; a window only sends them. The closed loop keeps
``concurrency`` requests in flight and reports what the server sustains. The
open loop sends at a fixed rate whatever the answers do and measures each
latency from the request's *scheduled* start, so a server that falls behind
shows it in p99 instead of silently slowing the generator (coordinated omission).

The client is aiohttp: it costs a fraction of httpx's CPU a request, and every
configuration shares the machine's two cores with it, so a cheaper client leaves
more of them to the servers being measured and adds less of its own stalls to
their latencies.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp

__all__ = ["Item", "Result", "closed_loop", "new_client", "open_loop"]


@dataclass(frozen=True)
class Item:
    """One prepared request."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None


@dataclass
class Result:
    label: str
    elapsed_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    exhausted: bool = False
    target_rate: float | None = None

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200) + sum(self.failures.values())

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def quantile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def mean_ms(self) -> float:
        if not self.latencies_s:
            return float("nan")
        return 1000 * sum(self.latencies_s) / len(self.latencies_s)


def new_client(concurrency: int) -> aiohttp.ClientSession:
    """A pooled session keeping up to ``concurrency`` connections (call from a running loop)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, use_dns_cache=True),
        timeout=aiohttp.ClientTimeout(total=30.0),
        trust_env=False,
    )


async def _send(client: aiohttp.ClientSession, item: Item, result: Result, started: float) -> None:
    try:
        async with client.request(
            item.method, item.url, headers=item.headers, data=item.content
        ) as r:
            await r.read()
            status = r.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.failures[type(exc).__name__] += 1
        return
    result.statuses[status] += 1
    if status == 200:
        result.latencies_s.append(time.perf_counter() - started)


async def closed_loop(
    client: aiohttp.ClientSession,
    items: list[Item],
    *,
    duration: float,
    concurrency: int,
    label: str,
) -> Result:
    """``concurrency`` workers send back to back until ``duration`` or the items run out."""
    result = Result(label, 0.0)
    source: Iterator[Item] = iter(items)
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            item = next(source, None)
            if item is None:
                result.exhausted = True
                return
            await _send(client, item, result, time.perf_counter())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - start
    return result


async def open_loop(
    client: aiohttp.ClientSession,
    items: list[Item],
    *,
    rate: float,
    duration: float,
    max_in_flight: int,
    label: str,
) -> Result:
    """Send at ``rate``/s for ``duration``; latency counts from each scheduled start."""
    n = min(len(items), int(rate * duration))
    result = Result(label, 0.0, target_rate=rate)
    result.exhausted = n < int(rate * duration)
    gate = asyncio.Semaphore(max_in_flight)
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.01

    async def one(item: Item, scheduled: float) -> None:
        try:
            await _send(client, item, result, scheduled)
        finally:
            gate.release()

    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()  # bounded: a stalled server cannot grow this without limit
        tasks.append(asyncio.create_task(one(items[i], scheduled)))
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - start
    return result
