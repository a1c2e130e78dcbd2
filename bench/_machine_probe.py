"""How fast the machine's CPU is, half-second by half-second, while a benchmark runs.

``python -m bench._machine_probe OUT`` runs the same small piece of pure-Python
work every 50 ms until it is stopped, and appends one line per run to ``OUT``:
the wall-clock time and the CPU time the work took on its own thread's CPU
clock. Waiting for a core does not count in that clock, so on a machine whose
cores always run at the same speed the number barely moves, however busy the
machine is. On a virtual machine whose host is shared it does move: on the
two-core VM these benchmarks were written on, the probe took 0.77 ms in some
seconds and 1.35 ms in others while nothing else ran (docs/performance.md,
tenth round). A server paced at 70% of its peak has no headroom left when its
cores run 1.7 times slower for a second, so every window is printed with how
much of it the machine spent slowed down.

The probe costs about 0.5% of one core.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Speed", "SpeedProbe"]

PERIOD_S = 0.05
SLICE_S = 0.5
#: A half-second slice is "slow" when its median probe took this much longer than
#: the fastest tenth of all probes of the run.
SLOW = 1.25
_ITERATIONS = 6000


def _work() -> int:
    total = 0
    for i in range(_ITERATIONS):
        total += i * i
    return total


def _run(out: Path) -> None:
    with out.open("a", buffering=1) as f:
        while True:
            started = time.thread_time_ns()
            _work()
            f.write(f"{time.time():.4f} {time.thread_time_ns() - started}\n")
            time.sleep(PERIOD_S)


@dataclass(frozen=True)
class Speed:
    """The probe over one window: its median CPU time, the run's fast reference,
    and how many half-second slices of the window ran slow."""

    median_us: float
    fast_us: float
    slow_slices: int
    slices: int

    def __str__(self) -> str:
        return (
            f"probe {self.median_us:.0f} us (fast {self.fast_us:.0f}), "
            f"slow {self.slow_slices}/{self.slices} half-seconds"
        )


class SpeedProbe:
    """The probe process, started on entry and stopped on exit."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="accord-bench-speed-", suffix=".txt")
        os.close(fd)
        self.path = Path(name)
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SpeedProbe:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench._machine_probe", str(self.path)],
            cwd=Path(__file__).resolve().parents[1],
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self.path.unlink(missing_ok=True)

    def _samples(self) -> list[tuple[float, float]]:
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((float(parts[0]), int(parts[1]) / 1000))
        return out

    def speed(self, start: float, end: float) -> Speed | None:
        """The probe between wall-clock times ``start`` and ``end`` (``time.time()``)."""
        samples = self._samples()
        inside = [(t, us) for t, us in samples if start <= t <= end]
        if not inside:
            return None
        ordered = sorted(us for _, us in samples)
        fast = statistics.median(ordered[: max(1, len(ordered) // 10)])
        slices: dict[int, list[float]] = {}
        for t, us in inside:
            slices.setdefault(int((t - start) / SLICE_S), []).append(us)
        slow = sum(1 for v in slices.values() if statistics.median(v) > SLOW * fast)
        return Speed(statistics.median(us for _, us in inside), fast, slow, len(slices))


if __name__ == "__main__":
    _run(Path(sys.argv[1]))
