"""Policy engines side by side: the embedded engine (regorus) vs a real OPA server over REST.

Same machine, same shipped bundle, same inputs (the differential corpus in
tests/policies/corpus), in one run: decisions/s and p50/p99 latency per engine,
the ratio to OPA's REST round trip, and how many corpus decisions differ from
OPA's (the target is embedded >= 5x REST and zero mismatches). The headline
rows are the embedded engine as the gateway runs it by default (regorus' VM
after its self-check, deciding inline on the event loop) through the async
``decide`` the exchange awaits, and in-thread; the interpreter rows
(``ACCORD_EMBEDDED_VM=false``, decisions hop to its worker thread) are for
comparison. regopy, the other
in-process candidate, is tried too so the engine choice in docs/policy-engines.md
can be re-measured. The OPA server is started here on a free loopback port and
stopped at the end; every loop is bounded by a count and a time budget.

    .venv/bin/python bench/bench_policy.py [--n 3000] [--seconds 15] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._exchange_support import OPA_SIDECAR_ENV  # noqa: E402
from gateway.policy.bundle import DECISION_QUERY, PolicyBundle  # noqa: E402
from gateway.policy.embedded import EmbeddedEngine  # noqa: E402
from gateway.policy.engine import decision_from_value  # noqa: E402
from gateway.policy.opa import OpaEngine  # noqa: E402
from tests.policies.harness import load_corpus  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_opa(opa_bin: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(opa_bin), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error"],
        env={**os.environ, **OPA_SIDECAR_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the OPA server did not start within 30 s")


class Result:
    def __init__(self, name: str, latencies_ns: list[int], wall_s: float) -> None:
        self.name = name
        self.count = len(latencies_ns)
        ordered = sorted(latencies_ns)
        self.p50_us = ordered[len(ordered) // 2] / 1000 if ordered else float("nan")
        self.p99_us = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
        self.rate = self.count / wall_s if wall_s > 0 else 0.0


async def measure_async(
    name: str, decide: Callable[[Any], Awaitable[Any]], inputs: Sequence[Any], n: int, budget: float
) -> Result:
    for doc in inputs[:20]:  # warm-up: connections, compiled queries
        await decide(doc)
    lat: list[int] = []
    start = time.perf_counter()
    while len(lat) < n and time.perf_counter() - start < budget:
        doc = inputs[len(lat) % len(inputs)]
        t0 = time.perf_counter_ns()
        await decide(doc)
        lat.append(time.perf_counter_ns() - t0)
    return Result(name, lat, time.perf_counter() - start)


async def measure_concurrent(
    name: str,
    decide: Callable[[Any], Awaitable[Any]],
    inputs: Sequence[Any],
    n: int,
    budget: float,
    concurrency: int,
) -> Result:
    lat: list[int] = []
    start = time.perf_counter()

    async def worker(offset: int) -> None:
        i = offset
        while len(lat) < n and time.perf_counter() - start < budget:
            t0 = time.perf_counter_ns()
            await decide(inputs[i % len(inputs)])
            lat.append(time.perf_counter_ns() - t0)
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return Result(name, lat, time.perf_counter() - start)


def measure_sync(
    name: str, decide: Callable[[Any], Any], inputs: Sequence[Any], n: int, budget: float
) -> Result:
    for doc in inputs[:20]:
        decide(doc)
    lat: list[int] = []
    start = time.perf_counter()
    while len(lat) < n and time.perf_counter() - start < budget:
        doc = inputs[len(lat) % len(inputs)]
        t0 = time.perf_counter_ns()
        decide(doc)
        lat.append(time.perf_counter_ns() - t0)
    return Result(name, lat, time.perf_counter() - start)


#: regopy 1.5.2 rejects ``some i, name in xs`` inside a comprehension (valid Rego v1
#: that OPA and regorus accept); this rewrite means the same and lets it be measured.
REGOPY_REWRITE = ("some i, name in levels; name == level", "name := levels[i]; name == level")


def _regopy_load(regopy: Any, sources: dict[str, str]) -> tuple[Any, str]:
    interp = regopy.Interpreter()
    saved = os.dup(2)  # rego-cpp prints its parse errors straight to fd 2
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            for path, text in sources.items():
                interp.add_module(path, text)
    except Exception as exc:
        first = next((ln for ln in str(exc).splitlines() if "errormsg" in ln), str(exc)[:120])
        return None, first.strip()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return interp, ""


def regopy_decider(bundle: PolicyBundle) -> tuple[Callable[[Any], Any] | None, str]:
    """regopy (rego-cpp) with a prebuilt bundle, or why it cannot run the policy."""
    try:
        import regopy
    except ImportError:
        return None, "not installed"
    interp, error = _regopy_load(regopy, bundle.policy_sources())
    status = "runs the shipped bundle"
    if interp is None:
        variant = {p: t.replace(*REGOPY_REWRITE) for p, t in bundle.policy_sources().items()}
        interp, again = _regopy_load(regopy, variant)
        if interp is None:
            return None, f"refuses the shipped bundle ({error}) and the rewrite ({again})"
        status = f"refuses the shipped bundle {error}; measured on a same-meaning rewrite"
    prebuilt = interp.build(DECISION_QUERY)

    def decide(doc: Any) -> Any:
        interp.set_input_term(json.dumps(doc))
        out = interp.query_bundle(prebuilt)
        value = json.loads(str(out)) if out.ok() else None
        if isinstance(value, dict) and "expressions" in value:
            value = value["expressions"][0]
        return decision_from_value(value, policy_version=bundle.version, engine="regopy")

    return decide, status


async def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--n", type=int, default=3000, help="decisions per engine (max)")
    parser.add_argument("--seconds", type=float, default=15.0, help="time budget per engine")
    parser.add_argument("--concurrency", type=int, default=8, help="OPA concurrent callers")
    default_opa = os.environ.get("ACCORD_OPA_BIN", str(ROOT / ".tools" / "bin" / "opa"))
    parser.add_argument("--opa-bin", type=Path, default=Path(default_opa))
    args = parser.parse_args(argv)
    n, budget = max(1, min(args.n, 200_000)), max(0.5, min(args.seconds, 120.0))

    bundle = PolicyBundle.from_directory(ROOT / "policies")
    inputs = [case.input for case in load_corpus()]
    proc, url = start_opa(args.opa_bin)
    # The gateway's default: the VM, self-checked, in evaluator processes.
    default = EmbeddedEngine(timeout_ms=5000)
    inline = EmbeddedEngine(timeout_ms=5000, isolation="inline")
    interpreter = EmbeddedEngine(timeout_ms=5000, vm=False, isolation="inline")
    opa = await OpaEngine.connect(url, timeout_ms=5000)
    results: list[Result] = []
    try:
        started = time.perf_counter()
        await default.load(bundle)
        load_s = time.perf_counter() - started
        await inline.load(bundle)
        await interpreter.load(bundle)
        await opa.load(bundle)
        # Correctness first: every corpus input on every engine, in this run.
        mismatches = {"default": 0, "interpreter": 0}
        for doc in inputs:
            want = (await opa.decide(doc)).to_json()
            if (await default.decide(doc)).to_json() != want:
                mismatches["default"] += 1
            if (await interpreter.decide(doc)).to_json() != want:
                mismatches["interpreter"] += 1
        regopy_decide, regopy_status = regopy_decider(bundle)
        regopy_mismatches: int | None = None
        if regopy_decide is not None:
            regopy_mismatches = 0
            for doc in inputs:
                if regopy_decide(doc).to_json() != (await opa.decide(doc)).to_json():
                    regopy_mismatches += 1

        mode = default.mode or "?"
        results.append(
            await measure_async(
                f"embedded default: {mode}, evaluator processes (sequential)",
                default.decide,
                inputs,
                n,
                budget,
            )
        )
        results.append(
            await measure_concurrent(
                f"embedded default: {mode}, evaluator processes ({args.concurrency} concurrent)",
                default.decide,
                inputs,
                n,
                budget,
                args.concurrency,
            )
        )
        results.append(
            await measure_async(
                f"embedded {mode}, isolation=inline (async)", inline.decide, inputs, n, budget
            )
        )
        results.append(
            measure_sync(f"embedded {mode} (in-thread)", inline.decide_sync, inputs, n, budget)
        )
        inline.drop_thread_engine()
        results.append(await measure_async("OPA REST (sequential)", opa.decide, inputs, n, budget))
        results.append(
            await measure_async(
                "embedded interpreter (async, worker)", interpreter.decide, inputs, n, budget
            )
        )
        results.append(
            measure_sync(
                "embedded interpreter (in-thread)", interpreter.decide_sync, inputs, n, budget
            )
        )
        interpreter.drop_thread_engine()
        results.append(
            await measure_concurrent(
                f"OPA REST ({args.concurrency} concurrent)",
                opa.decide,
                inputs,
                n,
                budget,
                args.concurrency,
            )
        )
        if regopy_decide is not None:
            results.append(
                measure_sync("regopy (prebuilt, in-thread)", regopy_decide, inputs, n, budget)
            )
    finally:
        await opa.close()
        await default.close()
        await inline.close()
        await interpreter.close()
        proc.terminate()
        proc.wait(10)

    rest = next(r.rate for r in results if r.name == "OPA REST (sequential)")
    print(
        f"policy bundle {bundle.version[:23]}…  corpus inputs: {len(inputs)}  opa: {args.opa_bin}"
    )
    print(f"default engine mode: {default.mode} ({default.mode_reason}); load {load_s:.2f} s")
    print(f"{'engine':<58}{'decisions':>10}{'dec/s':>11}{'p50 µs':>10}{'p99 µs':>10}{'vs REST':>9}")
    for r in results:
        print(
            f"{r.name:<58}{r.count:>10}{r.rate:>11.0f}{r.p50_us:>10.1f}{r.p99_us:>10.1f}"
            f"{r.rate / rest if rest else float('nan'):>8.1f}x"
        )
    print()
    for row in (0, 1, 2, 3):  # the embedded VM rows
        ratio = results[row].rate / rest if rest else float("nan")
        verdict = "met" if ratio >= 5 else "NOT met"
        print(f"{results[row].name} / OPA REST (sequential): {ratio:.1f}x", end="")
        print(f"  (target >= 5x: {verdict})")
    for name, count in mismatches.items():
        print(f"mismatches embedded {name} vs OPA on {len(inputs)} corpus inputs: {count}")
    print(f"regopy: {regopy_status}")
    if regopy_mismatches is not None:
        print(f"mismatches regopy vs OPA on {len(inputs)} corpus inputs: {regopy_mismatches}")
    return 0 if not any(mismatches.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
