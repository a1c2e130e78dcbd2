"""Exchanges/s and latency of Accord beside a direct call and a bare proxy, in one run.

    .venv/bin/python -m bench.bench_exchange [--duration 8] [--concurrency 16]
        [--pace 0.7] [--only abcd] [--workers 1] [--profile [PY_SPY]] [--profile-paced]

Four configurations, all on loopback, each a record lookup of one person in the
sample civil registry (``examples.launch``):

(a) direct: ``GET /api/v2/citizens/{id}`` with the registry's own bearer token;
(b) a bare pass-through proxy (``bench._exchange_proxy``, FastAPI + httpx, no
    security) taking the same JSON body Accord takes;
(c) Accord with its embedded defaults: ``accord serve`` on SQLite with the
    embedded policy engine, seeded with the demo (``gateway.demo.seed``);
(d) Accord on PostgreSQL (``ACCORD_TEST_PG_URL`` or an ephemeral cluster) with
    a real ``opa run --server``.

Accord is asked ``welfare-person-lookup``/``person`` for ``benefit-eligibility``
as ``welfare-office``/``benefits-app``. Each request carries its own single-use
token, signed before the timed window starts (the signing cost is printed
apart). Per configuration: a warm-up, a closed-loop window at ``--concurrency``
(the peak), and an open-loop window at ``--pace`` of that peak (p99/p50, latency
from the scheduled send time; for the baselines, the yardstick of what this
machine allows). The per-stage breakdown comes from
``accord_exchange_stage_seconds`` deltas over each Accord window; CPU per
request, at peak and paced, from ``/proc`` for every process involved.
``--profile`` adds one more closed-loop window (``--profile-paced``: open-loop at
the paced rate) per Accord configuration with ``py-spy record --gil``
attached to the gateway (samples of whichever thread holds the GIL, taken from
outside the process): one gateway process is bound by that serial CPU, so this
is where an exchange's time goes. Targets (issue 6):
(c) and (d) reach >= 50% of (b)'s exchanges/s, and p99 <= 3x p50 at 70% of peak.
Every process started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._exchange_load import Item, Result, closed_loop, new_client, open_loop  # noqa: E402
from bench._exchange_proxy import FIELDS  # noqa: E402
from bench._exchange_report import (  # noqa: E402
    Row,
    print_cpu,
    print_profile,
    print_speed,
    print_stages,
    print_summary,
)
from bench._exchange_support import (  # noqa: E402
    Proc,
    cpu_seconds,
    machine_busy_seconds,
    postgres_url,
    scrape_stages,
    seed_gateway,
    start_gateway,
    start_opa,
    start_proxy,
    start_py_spy,
    stop,
)
from bench._machine_probe import SpeedProbe  # noqa: E402

MakeItems = Callable[[int], list[Item]]
WARMUP_S = 2.0


def _subjects() -> list[str]:
    from examples.synth import people

    return [p.person_id for p in people()]


def _reusable(items: list[Item]) -> MakeItems:
    """Requests without single-use tokens: the same few objects, repeated."""
    return lambda n: [items[i % len(items)] for i in range(n)]


class Signer:
    """Builds Accord requests, each with its own token; remembers the signing cost."""

    def __init__(self, base_url: str, key_path: Path, subjects: list[str]) -> None:
        from gateway.jose import load_private_key_pem

        self.url = base_url + "/v1/exchanges"
        self.key = load_private_key_pem(key_path)
        self.subjects = itertools.cycle(subjects)
        self.seconds = 0.0
        self.count = 0

    def __call__(self, n: int) -> list[Item]:
        from gateway.auth.requests import sign_request_token

        out = []
        t0 = time.perf_counter()
        for _ in range(n):
            body = json.dumps(
                {
                    "agreement": "welfare-person-lookup",
                    "dataset": "person",
                    "purpose": "benefit-eligibility",
                    "query": {"kind": "record", "subject": next(self.subjects)},
                }
            ).encode()
            token = sign_request_token(
                self.key,
                department="welfare-office",
                system="benefits-app",
                audience="accord-gateway",
                method="POST",
                path="/v1/exchanges",
                body=body,
                lifetime_s=240,
            )
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            out.append(Item("POST", self.url, headers, body))
        self.seconds += time.perf_counter() - t0
        self.count += n
        return out

    @property
    def us_per_token(self) -> float:
        return 1e6 * self.seconds / self.count if self.count else float("nan")


def _closed(items: list[Item], args: argparse.Namespace, label: str, duration: float) -> Result:
    async def run() -> Result:
        async with new_client(args.concurrency) as client:
            return await closed_loop(
                client, items, duration=duration, concurrency=args.concurrency, label=label
            )

    return asyncio.run(run())


def _paced(items: list[Item], args: argparse.Namespace, label: str, rate: float) -> Result:
    async def run() -> Result:
        async with new_client(256) as client:
            return await open_loop(
                client, items, rate=rate, duration=args.duration, max_in_flight=256, label=label
            )

    return asyncio.run(run())


@contextmanager
def _cpu_window(cpu: dict[str, list[int]]) -> Iterator[dict[str, float]]:
    """CPU seconds used inside the block by the client (this process), each process
    group, and "others": the rest of the machine's busy time."""
    used: dict[str, float] = {}
    cpu0 = {name: cpu_seconds(pids) for name, pids in cpu.items()}
    busy0, client0 = machine_busy_seconds(), time.process_time()
    yield used
    busy = machine_busy_seconds() - busy0
    used["client"] = time.process_time() - client0
    used.update({name: cpu_seconds(pids) - cpu0[name] for name, pids in cpu.items()})
    used["others"] = max(0.0, busy - sum(used.values()))


def measure(
    key: str,
    label: str,
    make: MakeItems,
    args: argparse.Namespace,
    *,
    cpu: dict[str, list[int]],
    gateway: Proc | None = None,
) -> Row:
    """Warm up, find the peak (closed loop), then pace at ``args.pace`` of it (the
    baselines too: their tail at the same share of their own peak is the yardstick
    for Accord's)."""
    print(f"{key} {label}: warm-up {WARMUP_S:.0f} s", flush=True)
    warm = _closed(make(max(2000, args.concurrency * 200)), args, label, WARMUP_S)
    pool = int(max(warm.rate, 50) * args.duration * 2) + 200
    items = make(pool)
    before = scrape_stages(gateway.url) if gateway else None
    started = time.time()
    with _cpu_window(cpu) as cpu_used:
        peak = _closed(items, args, label, args.duration)
    row = Row(key, label, peak, cpu_s=cpu_used, window=(started, time.time()))
    if gateway is not None and before is not None and args.workers == 1:
        row.stages = scrape_stages(gateway.url).minus(before)  # per process: one worker only
    print(
        f"    peak {peak.rate:.1f}/s, p50 {peak.quantile_ms(0.5):.2f} ms, "
        f"p99 {peak.quantile_ms(0.99):.2f} ms, errors {peak.errors}"
        + (" (request pool ran out)" if peak.exhausted else ""),
        flush=True,
    )
    rate = args.pace * peak.rate
    items = make(int(rate * args.duration) + 10)
    before = scrape_stages(gateway.url) if gateway is not None and args.workers == 1 else None
    started = time.time()
    with _cpu_window(cpu) as row.paced_cpu_s:
        row.paced = _paced(items, args, label, rate)
    row.paced_window = (started, time.time())
    if gateway is not None and before is not None:
        row.paced_stages = scrape_stages(gateway.url).minus(before)
    print(
        f"    paced {rate:.1f}/s: p50 {row.paced.quantile_ms(0.5):.2f} ms, "
        f"p99 {row.paced.quantile_ms(0.99):.2f} ms, errors {row.paced.errors}",
        flush=True,
    )
    if gateway is not None and args.py_spy:
        out = Path(tempfile.gettempdir()) / f"bench-exchange-{key.strip('()')}.pyspy.txt"
        items = make(pool)
        spy = start_py_spy(args.py_spy, gateway.process.pid, args.duration, out)
        try:
            time.sleep(0.5)  # let py-spy attach before the window starts
            if args.profile_paced:
                prof = _paced(make(int(rate * args.duration) + 10), args, label, rate)
            else:
                prof = _closed(items, args, label, args.duration)
        finally:
            spy.wait(timeout=args.duration + 30)
        row.profile = out
        row.profile_ok = prof.ok
        print(
            f"    profiled window: {prof.rate:.1f}/s, errors {prof.errors} (py-spy attached)",
            flush=True,
        )
    return row


def _accord(
    key: str,
    label: str,
    args: argparse.Namespace,
    work: Path,
    env: dict[str, str],
    subjects: list[str],
    cpu: dict[str, list[int]],
) -> Row:
    seed_gateway(env)
    gw = start_gateway(f"gateway-{key.strip('()')}", env, work, workers=args.workers)
    try:
        signer = Signer(
            gw.url, Path(env["ACCORD_DATA_DIR"]) / "demo-keys" / "welfare-office.pem", subjects
        )
        row = measure(
            key,
            label,
            signer,
            args,
            cpu={"gateway": gw.pids, **cpu},
            gateway=gw,
        )
        row.sign_us = signer.us_per_token
        return row
    finally:
        stop(gw.process)


def run(args: argparse.Namespace) -> list[Row]:
    from examples.launch import launch

    rows: list[Row] = []
    subjects = _subjects()
    with tempfile.TemporaryDirectory(prefix="accord-bench-") as tmp, SpeedProbe() as probe:
        work = Path(tmp)
        with launch(["civil_registry"], data_dir=work / "departments") as deps:
            civil = deps.env["CIVIL_REGISTRY_URL"]
            token = deps.env["CIVIL_REGISTRY_TOKEN"]
            civil_cpu = {"registry": [deps.processes["civil_registry"].pid]}
            if "a" in args.only:
                direct = [
                    Item(
                        "GET",
                        f"{civil}/api/v2/citizens/{s}?fields={FIELDS}",
                        {"Authorization": f"Bearer {token}"},
                    )
                    for s in subjects
                ]
                rows.append(measure("(a)", "direct REST", _reusable(direct), args, cpu=civil_cpu))
            if "b" in args.only:
                proxy = start_proxy(civil, token, work, workers=args.workers)
                try:
                    body = [
                        json.dumps({"query": {"kind": "record", "subject": s}}).encode()
                        for s in subjects
                    ]
                    via = [
                        Item(
                            "POST",
                            proxy.url + "/v1/exchanges",
                            {"Content-Type": "application/json"},
                            b,
                        )
                        for b in body
                    ]
                    cpu = {"proxy": proxy.pids, **civil_cpu}
                    rows.append(measure("(b)", "bare proxy", _reusable(via), args, cpu=cpu))
                finally:
                    stop(proxy.process)
            base_env = {"ACCORD_DEV_MODE": "true", **deps.env}
            if "c" in args.only:
                data = work / "accord-c"
                env = {
                    **base_env,
                    "ACCORD_DATA_DIR": str(data),
                    "ACCORD_DATABASE_URL": f"sqlite:///{data / 'accord.db'}",
                    "ACCORD_POLICY_ENGINE": "embedded",
                }
                label = "Accord SQLite+embedded"
                rows.append(_accord("(c)", label, args, work, env, subjects, civil_cpu))
            if "d" in args.only:
                with postgres_url() as (pg_url, pg_pid), start_opa(work) as opa:
                    data = work / "accord-d"
                    env = {
                        **base_env,
                        "ACCORD_DATA_DIR": str(data),
                        "ACCORD_DATABASE_URL": pg_url,
                        "ACCORD_POLICY_ENGINE": "opa",
                        "ACCORD_OPA_URL": opa.url,
                    }
                    cpu = {**civil_cpu, "opa": opa.pids}
                    if pg_pid is not None:
                        cpu["postgres"] = [pg_pid]
                    label = "Accord PostgreSQL+OPA"
                    rows.append(_accord("(d)", label, args, work, env, subjects, cpu))
        for row in rows:
            row.speed = probe.speed(*row.window) if row.window else None
            row.paced_speed = probe.speed(*row.paced_window) if row.paced_window else None
        print_summary(rows, args.pace)
        print_speed(rows)
        print_cpu(rows)
        print_stages(rows)
        print_profile(rows)
    return rows


def _tree() -> str:
    """The commit measured, and whether gateway code had uncommitted edits at the time."""
    import subprocess

    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "gateway", "connectors", "audit").splitlines()
    return f"{git('rev-parse', '--short', 'HEAD')}" + (
        f" + {len(dirty)} uncommitted files in gateway/connectors/audit" if dirty else ""
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_exchange", description=__doc__)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per timed window")
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop requests in flight")
    ap.add_argument("--pace", type=float, default=0.7, help="open-loop rate as a share of peak")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of the gateway and of the proxy (same for both)",
    )
    ap.add_argument("--only", default="abcd", help="which configurations to run, e.g. 'bc'")
    ap.add_argument(
        "--profile",
        nargs="?",
        const="py-spy",
        dest="py_spy",
        metavar="PY_SPY",
        help="sample the gateway with py-spy (path to the binary, default: on PATH)",
    )
    ap.add_argument(
        "--profile-paced",
        action="store_true",
        help="profile at the paced rate instead of closed-loop peak",
    )
    args = ap.parse_args(argv)
    if not 0 < args.duration <= 30:
        ap.error("--duration must be in (0, 30]")
    if not 1 <= args.workers <= 4:
        ap.error("--workers must be in [1, 4]")
    if not 1 <= args.concurrency <= 256:
        ap.error("--concurrency must be in [1, 256]")
    if args.py_spy:
        found = shutil.which(args.py_spy)
        if found is None:
            ap.error(
                f"{args.py_spy} not found: pip install --target /tmp/pyspy py-spy, "
                "then --profile /tmp/pyspy/bin/py-spy"
            )
        args.py_spy = found
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"bench_exchange {started}: duration {args.duration} s, concurrency {args.concurrency}, "
        f"gateway workers {args.workers}, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"tree {_tree()}")
    run(args)


if __name__ == "__main__":
    main()
