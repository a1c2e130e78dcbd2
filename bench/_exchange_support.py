"""Processes and measurements for ``bench.bench_exchange``: servers, /metrics, CPU.

Everything here starts loopback-only subprocesses and hands back a way to stop
them; ``bench_exchange`` stops them in ``finally`` blocks. CPU accounting reads
``/proc/<pid>/stat`` (utime + stime of a process and all its descendants), so
the report can say which process burnt the cores during a timed window.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")

#: How the benchmarks run OPA: as docs/policy-engines.md ("Running the OPA
#: sidecar") recommends for a sidecar serving one gateway worker.
OPA_SIDECAR_ENV = {"GOMAXPROCS": "1", "GOGC": "400"}

__all__ = [
    "OPA_SIDECAR_ENV",
    "ROOT",
    "Proc",
    "StageSnapshot",
    "cpu_seconds",
    "free_port",
    "machine_busy_seconds",
    "postgres_url",
    "scrape_stages",
    "seed_gateway",
    "start_gateway",
    "start_opa",
    "start_proxy",
    "start_py_spy",
    "stop",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A started server: its base URL, its process, and where its output went."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path | None = None
    extra_pids: list[int] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [self.process.pid, *self.extra_pids]


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{url}: exited with {proc.returncode}\n{tail}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def _spawn(cmd: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    try:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def start_proxy(upstream: str, token: str, workdir: Path, *, workers: int = 1) -> Proc:
    """The bare pass-through proxy (``bench._exchange_proxy``) under uvicorn."""
    port = free_port()
    log = workdir / "proxy.log"
    cmd = [sys.executable, "-m", "bench._exchange_proxy", "--port", str(port)]
    cmd += ["--workers", str(workers)]
    proc = _spawn(cmd, {"BENCH_UPSTREAM": upstream, "BENCH_UPSTREAM_TOKEN": token}, log)
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/healthz", proc, log, 30)
    return Proc("proxy", url, proc, log)


def seed_gateway(env: Mapping[str, str]) -> None:
    """Migrate and seed the demo departments, agreements and bindings into the store."""
    from gateway.demo import seed
    from gateway.services import build_services
    from gateway.settings import Settings

    services = build_services(
        Settings(
            dev_mode=True,
            data_dir=Path(env["ACCORD_DATA_DIR"]),
            database_url=env["ACCORD_DATABASE_URL"],
        )
    )
    try:
        # Well above any rate here: at the demo's 6,000 a minute, the windows of a
        # fast run would meet the quota and count refusals instead of throughput.
        seed(services, per_minute=10_000_000)
    finally:
        services.close()


def start_gateway(name: str, env: Mapping[str, str], workdir: Path, *, workers: int = 1) -> Proc:
    """``accord serve --workers N`` on a free loopback port."""
    port = free_port()
    log = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "gateway.cli.main", "serve", "--port", str(port)]
    cmd += ["--workers", str(workers)]
    proc = _spawn(cmd, env, log)
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/health", proc, log, 90)
    return Proc(name, url, proc, log)


@contextlib.contextmanager
def start_opa(workdir: Path) -> Iterator[Proc]:
    """A real ``opa run --server`` on a free loopback port."""
    opa = Path(os.environ.get("ACCORD_OPA_BIN", ROOT / ".tools" / "bin" / "opa"))
    port = free_port()
    log = workdir / "opa.log"
    cmd = [str(opa), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error"]
    proc = _spawn(cmd, OPA_SIDECAR_ENV, log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/health", proc, log, 30)
        yield Proc("opa", url, proc, log)
    finally:
        stop(proc)


@contextlib.contextmanager
def postgres_url() -> Iterator[tuple[str, int | None]]:
    """A fresh database on ``ACCORD_TEST_PG_URL`` or on an ephemeral cluster.

    Yields the URL and the postmaster pid when the cluster is ours (for CPU
    accounting); the ephemeral cluster is stopped and removed afterwards.
    """
    from tests._support.servers import PostgresCluster, fresh_database

    server = os.environ.get("ACCORD_TEST_PG_URL")
    if server:
        yield fresh_database(server), None
        return
    cluster = PostgresCluster()
    try:
        pid_file = cluster.dir / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        yield fresh_database(cluster.url), pid
    finally:
        cluster.stop()


# -- CPU accounting -------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _own_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by ``pids`` and every live descendant."""
    tree = _children()
    seen: set[int] = set()
    todo = list(pids)
    total = 0.0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _own_cpu(pid)
        todo.extend(tree.get(pid, []))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``), for "others"."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


# -- /metrics -------------------------------------------------------------------

_SAMPLE = re.compile(r"^accord_exchange_stage_seconds_(bucket|sum|count)\{([^}]*)\}\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class StageSnapshot:
    """Cumulative histogram state per stage: sum, count, and (le, count) buckets."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)

    def minus(self, before: StageSnapshot) -> StageSnapshot:
        out = StageSnapshot()
        for stage, value in self.sums.items():
            out.sums[stage] = value - before.sums.get(stage, 0.0)
            out.counts[stage] = self.counts.get(stage, 0.0) - before.counts.get(stage, 0.0)
            prev = before.buckets.get(stage, {})
            out.buckets[stage] = {
                le: n - prev.get(le, 0.0) for le, n in self.buckets.get(stage, {}).items()
            }
        return out

    def mean_ms(self, stage: str) -> float:
        n = self.counts.get(stage, 0.0)
        return 1000 * self.sums.get(stage, 0.0) / n if n else float("nan")

    def quantile_ms(self, stage: str, q: float) -> float:
        """Linear interpolation inside the bucket, as PromQL's histogram_quantile does."""
        buckets = sorted(self.buckets.get(stage, {}).items())
        if not buckets or buckets[-1][1] <= 0:
            return float("nan")
        rank = q * buckets[-1][1]
        lower_le, lower_n = 0.0, 0.0
        for le, n in buckets:
            if n >= rank:
                if le == float("inf"):
                    return 1000 * lower_le
                width = n - lower_n
                frac = (rank - lower_n) / width if width else 1.0
                return 1000 * (lower_le + (le - lower_le) * frac)
            lower_le, lower_n = le, n
        return float("nan")


def scrape_stages(base_url: str) -> StageSnapshot:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    snap = StageSnapshot()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        kind, raw_labels, value = match.groups()
        labels = dict(_LABEL.findall(raw_labels))
        stage = labels.get("stage", "?")
        if kind == "sum":
            snap.sums[stage] = float(value)
        elif kind == "count":
            snap.counts[stage] = float(value)
        else:
            snap.buckets.setdefault(stage, {})[float(labels["le"])] = float(value)
    return snap


def start_py_spy(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` from outside: only the thread holding the GIL, i.e. the serial CPU."""
    cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    cmd += ["--rate", "200", "--gil", "--threads", "--subprocesses", "--nonblocking"]
    cmd += ["--format", "raw", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
