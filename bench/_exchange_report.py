"""Tables printed by ``bench.bench_exchange``: throughput, pacing, stages, CPU, profile."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench._exchange_load import Result
from bench._exchange_support import StageSnapshot
from bench._machine_probe import SLOW, Speed

__all__ = ["Row", "print_cpu", "print_profile", "print_speed", "print_stages", "print_summary"]

STAGES = ("auth", "decide", "fetch", "translate", "release", "audit", "total")


@dataclass
class Row:
    """Everything measured for one configuration."""

    key: str
    label: str
    peak: Result
    paced: Result | None = None
    stages: StageSnapshot | None = None
    paced_stages: StageSnapshot | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    paced_cpu_s: dict[str, float] = field(default_factory=dict)
    sign_us: float | None = None
    profile: Path | None = None
    profile_ok: int = 0
    window: tuple[float, float] | None = None  # wall-clock start and end of the peak window
    paced_window: tuple[float, float] | None = None
    speed: Speed | None = None
    paced_speed: Speed | None = None


def _f(value: float, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _errors(result: Result) -> str:
    if not result.errors:
        return "0"
    parts = [f"{s}x{n}" for s, n in sorted(result.statuses.items()) if s != 200]
    parts += [f"{k}x{n}" for k, n in result.failures.items()]
    return ",".join(parts)


def _tail(q: Result) -> float:
    return q.quantile_ms(0.99) / q.quantile_ms(0.5)


def print_summary(rows: list[Row], pace: float) -> None:
    print()
    print(
        f"{'configuration':<38} {'ex/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>8}   "
        f"{'paced/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8}"
    )
    for row in rows:
        p = row.peak
        line = (
            f"{row.key + ' ' + row.label:<38} {_f(p.rate):>8} {_f(p.quantile_ms(0.5), 2):>8} "
            f"{_f(p.quantile_ms(0.99), 2):>8} {_errors(p):>8}"
        )
        if row.paced is not None:
            q = row.paced
            ratio = _tail(q)
            line += (
                f"   {_f(q.rate):>8} {_f(q.quantile_ms(0.5), 2):>8} "
                f"{_f(q.quantile_ms(0.99), 2):>8} {_f(ratio, 2):>8}"
            )
            if q.errors:
                line += f"  errors {_errors(q)}"
        print(line)
    by_key = {r.key: r for r in rows}
    base = by_key.get("(b)")
    print()
    for key in ("(c)", "(d)"):
        accord = by_key.get(key)
        if accord is None:
            continue
        if base is not None and base.peak.rate:
            ratio = accord.peak.rate / base.peak.rate
            verdict = "meets" if ratio >= 0.5 else "MISSES"
            print(f"{key}/(b) throughput = {ratio:.2f}   (target >= 0.50: {verdict})")
        if accord.paced is not None:
            q = accord.paced
            tail = _tail(q)
            verdict = "meets" if tail <= 3 else "MISSES"
            yardstick = ""
            if base is not None and base.paced is not None:
                b = base.paced
                yardstick = f"; (b) at {pace:.0%} of its peak: {_tail(b):.2f}"
            slow = accord.paced_speed
            if slow is not None:
                yardstick += f"; machine slow in {slow.slow_slices}/{slow.slices} half-seconds"
            print(
                f"{key} p99/p50 at {pace:.0%} of peak ({q.target_rate:.0f}/s) = {tail:.2f}"
                f"   (target <= 3: {verdict}{yardstick})"
            )
    signs = [r.sign_us for r in rows if r.sign_us is not None]
    if signs:
        print(f"client token signing (not in the windows): {signs[0]:.0f} us per request token")


def print_speed(rows: list[Row]) -> None:
    print()
    print("Machine speed in each window: CPU time of the same pure-Python work every 50 ms")
    print(f"(bench._machine_probe); a half-second is slow when its median took over {SLOW}x")
    print("the fastest tenth of the run. A server paced at 70% of its peak has no headroom")
    print("left in slow half-seconds, so read the p99 of a window with many beside them.")
    for row in rows:
        for window, speed in (("peak", row.speed), ("paced", row.paced_speed)):
            if speed is not None:
                print(f"  {row.key} {window:<6} {speed}")


def print_cpu(rows: list[Row]) -> None:
    print()
    print("CPU during the peak window, then the paced one: ms of CPU per successful request")
    print("(cores busy); 'others' is every other process on the machine (other users,")
    print("PostgreSQL if not ours)")
    for row in rows:
        for window, used, result in (
            ("", row.cpu_s, row.peak),
            ("paced", row.paced_cpu_s, row.paced),
        ):
            if not used or result is None:
                continue
            parts = []
            for name, cpu in used.items():
                per = 1000 * cpu / result.ok if result.ok else float("nan")
                parts.append(f"{name} {_f(per, 2)} ({cpu / result.elapsed_s:.2f})")
            print(f"  {window or row.key:<6} " + "   ".join(parts))


def print_stages(rows: list[Row]) -> None:
    for row in rows:
        windows = [("peak", row.stages, row.peak), ("paced", row.paced_stages, row.paced)]
        for window, snap, result in windows:
            if snap is not None and result is not None:
                _stage_table(row, window, snap, result)


def _stage_table(row: Row, window: str, snap: StageSnapshot, result: Result) -> None:
    total = snap.mean_ms("total")
    print()
    print(f"{row.key} {row.label}: stage latency in the {window} window (from /metrics deltas)")
    print(f"  {'stage':<12} {'mean ms':>8} {'~p50 ms':>8} {'~p99 ms':>8} {'of total':>9}")
    for stage in STAGES:
        mean = snap.mean_ms(stage)
        share = mean / total if total and not math.isnan(mean) else float("nan")
        print(
            f"  {stage:<12} {_f(mean, 2):>8} {_f(snap.quantile_ms(stage, 0.5), 2):>8} "
            f"{_f(snap.quantile_ms(stage, 0.99), 2):>8} {_f(100 * share, 0):>8}%"
        )
    inside = sum(snap.mean_ms(s) for s in STAGES[:-1] if not math.isnan(snap.mean_ms(s)))
    print(f"  {'(in total, between stages: resolve, quota, decision log, receipt)':<12}")
    print(f"  {'':<12} {_f(total - inside, 2):>8}")
    print(f"  client-observed mean {result.mean_ms:.2f} ms; outside 'total' (HTTP server,")
    print(f"  routing, middleware, queueing in the server) {result.mean_ms - total:.2f} ms")


_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _where(frame: str) -> str:
    """``func (path/file.py:12)`` -> ``pkg/file.py:func`` relative to site-packages or repo."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{match['name']}"


def _component(where: str) -> str:
    head, _, rest = where.split(":", 1)[0].partition("/")
    if head in ("gateway", "connectors", "audit", "examples", "asyncio", "concurrent"):
        return f"{head}/{rest.split('/', 1)[0].removesuffix('.py')}"
    return head.removesuffix(".py")


def _thread_kind(frames: list[str]) -> str:
    joined = ";".join(frames)
    if "concurrent/futures/thread.py" in joined:
        return "to_thread workers"
    if ".run_forever" in joined or ":run_forever" in joined:
        return "event-loop thread"
    return "other threads"


def _load_pyspy(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    out: dict[str, list[tuple[list[str], int]]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        out.setdefault(_thread_kind(frames), []).append(([_where(f) for f in frames], int(count)))
    return out


def print_profile(rows: list[Row], top: int = 12, rate: int = 200) -> None:
    """Summarise ``py-spy record --gil --format raw``: GIL-holding samples per thread kind."""
    for row in rows:
        if row.profile is None or not row.profile.exists():
            continue
        kinds = _load_pyspy(row.profile)
        total = sum(n for stacks in kinds.values() for _, n in stacks)
        seconds = max(row.peak.elapsed_s, 1e-9)
        print()
        print(f"{row.key} {row.label}: py-spy samples of the GIL holder ({row.profile})")
        print(f"  {total} samples at {rate}/s over ~{seconds:.0f} s: the GIL was held")
        print(f"  {total / (rate * seconds):.0%} of the time; shares below are of those samples")
        if row.profile_ok:
            held = 1000 * total / rate / row.profile_ok
            print(
                f"  = {held:.1f} ms of GIL-holding time per exchange ({row.profile_ok} exchanges)"
            )
        for kind, stacks in sorted(kinds.items(), key=lambda kv: -sum(n for _, n in kv[1])):
            n_kind = sum(n for _, n in stacks)
            own: Counter[str] = Counter()
            comp: Counter[str] = Counter()
            cum: Counter[str] = Counter()
            for frames, n in stacks:
                own[frames[-1]] += n
                comp[_component(frames[-1])] += n
                cum.update({f: n for f in set(frames)})
            print(f"  {kind}: {100 * n_kind / total:.0f}% of the GIL-holding samples")
            print("    self time by component:")
            for name, n in comp.most_common(top):
                print(f"      {100 * n / n_kind:5.1f}%  {name}")
            print("    hottest frames (self):")
            for name, n in own.most_common(top):
                print(f"      {100 * n / n_kind:5.1f}%  {name}")
            ours = [
                (w, n)
                for w, n in cum.most_common()
                if w.startswith(("gateway/", "connectors/", "audit/"))
            ]
            print("    our code (inclusive):")
            for name, n in ours[:top]:
                print(f"      {100 * n / n_kind:5.1f}%  {name}")
