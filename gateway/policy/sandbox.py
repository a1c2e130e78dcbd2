"""Evaluator processes: the embedded engine's decisions, bounded in time and memory.

regorus keeps the GIL for a whole evaluation and cannot be interrupted, so a
policy that is slow on some input (an input-sized built-in, a deep
comprehension) would stall every request the gateway serves, and a timeout
could only refuse it after the fact. Evaluating in separate processes
(``gateway.policy._evaluator``) bounds both:

* each decision goes to an idle evaluator over a pipe and is awaited under the
  policy timeout; an evaluator that overruns it is killed (SIGKILL) and a new
  one started in the background, and the decision is a ``policy_error`` deny.
  Waiting for an idle evaluator has a timeout of its own, so a decision takes
  at most twice the policy timeout;
* an evaluator runs under an address-space limit (``RLIMIT_AS``), so a policy
  that builds huge values ends its own process, never the gateway's;
* one that dies for any reason (a regorus abort included) is replaced the same
  way; the decision it owed fails closed.

Each evaluator holds one version at a time and is sent the version's sources
(and VM program) the first time it decides for it. An evaluator decides one
input at a time: an overrun then costs only the decision that caused it.
While every evaluator is busy a decision waits for one, within its timeout.

Work done once over many inputs (a version's load self-check, the proposal
checks, the impact dry-run) runs in a process of its own (``run_job``), under a
timeout and the same memory limit.

Evaluator processes get none of the gateway's environment (it holds secrets),
only what Python needs to start. The protocol is in ``gateway.policy._evaluator``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["EvaluatorPool", "JobFailed", "Outcome", "VersionSources", "run_job"]

log = structlog.get_logger(__name__)

_LENGTH = struct.Struct(">I")
#: How long a stopping evaluator may take to exit after its stdin closes.
_EXIT_GRACE_S = 2.0
#: The only environment variables an evaluator process gets.
_ENVIRONMENT = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR")
#: The address-space limit of a job's process, as for the evaluators by default.
JOB_MEMORY_MIB = 2048


class JobFailed(Exception):
    """A job's process overran its timeout, died, or answered no JSON."""


def run_job(
    job: str, args: dict[str, Any], *, timeout_s: float, memory_mib: int = JOB_MEMORY_MIB
) -> Any:
    """Run ``job`` (``gateway.policy._jobs``) in a process of its own; its JSON result.

    Blocks the calling thread (not the GIL) until the process ends; killed at
    ``timeout_s``. Raises ``JobFailed`` naming what went wrong.
    """
    try:
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module
            [*_command(memory_mib), "--job"],
            input=json.dumps({"job": job, "args": args}).encode(),
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env=_environment(),
        )
    except subprocess.TimeoutExpired as exc:
        raise JobFailed(f"the {job} job overran {timeout_s:g} s and was stopped") from exc
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip().splitlines()
        why = stderr[-1][:300] if stderr else f"exit status {proc.returncode}"
        raise JobFailed(f"the {job} job's process failed ({why})")
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise JobFailed(f"the {job} job answered no JSON") from exc


def _command(memory_mib: int) -> list[str]:
    return [sys.executable, "-m", "gateway.policy._evaluator", str(memory_mib)]


def _environment() -> dict[str, str]:
    return {name: os.environ[name] for name in _ENVIRONMENT if name in os.environ}


@dataclass(frozen=True)
class VersionSources:
    """What an evaluator needs to decide for one version."""

    version: str
    sources: tuple[tuple[str, str], ...]
    #: The serialised VM program, or None to interpret.
    program: bytes | None

    def load_frame(self) -> bytes:
        doc = {
            "version": self.version,
            "sources": [list(pair) for pair in self.sources],
            "program": base64.b64encode(self.program).decode() if self.program else None,
        }
        return b"L" + json.dumps(doc).encode()


@dataclass(frozen=True)
class Outcome:
    """One evaluation: the decision value, or why there is none."""

    value: Any = None
    error: str | None = None
    #: The VM could not evaluate the input and the interpreter decided it.
    interpreted: bool = False


class _Evaluator:
    """One evaluator process and the version it holds."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.version: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def call(self, request: bytes) -> bytes:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(_LENGTH.pack(len(request)) + request)
        await stdin.drain()
        (size,) = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))
        return await stdout.readexactly(size)

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def stop(self) -> None:
        """Close its stdin (it exits), kill it if it does not, and reap it."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), _EXIT_GRACE_S)
        except TimeoutError:
            self.kill()
            await self.process.wait()


class EvaluatorPool:
    """``size`` evaluator processes, each deciding one input at a time."""

    def __init__(self, *, size: int, timeout_s: float, memory_mib: int) -> None:
        self._size = size
        self._timeout = timeout_s
        self._memory_mib = memory_mib
        self._idle: asyncio.Queue[_Evaluator] = asyncio.Queue()
        self._all: set[_Evaluator] = set()
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False
        self._last_start_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the evaluators; raise ``OSError`` when none can be started."""
        self._loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._start_one() for _ in range(self._size)))
        if not self._all:
            raise OSError(f"no policy evaluator process started: {self._last_start_error}")

    @property
    def ready(self) -> int:
        """Evaluators alive (idle or deciding)."""
        return sum(1 for e in self._all if e.process.returncode is None)

    @property
    def size(self) -> int:
        return self._size

    def serves_this_loop(self) -> bool:
        """Whether the calling thread runs the event loop the pipes belong to."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def evaluate(self, loaded: VersionSources, payload: str) -> Outcome:
        """Decide ``payload`` with ``loaded`` on an idle evaluator.

        Waiting for an idle evaluator and the evaluation itself each get the
        timeout: only an evaluation that overran its own budget is killed,
        never one whose caller waited long in line.
        """
        try:
            async with asyncio.timeout(self._timeout):
                evaluator = await self._idle_evaluator()
        except TimeoutError:
            return Outcome(error="policy timeout (no evaluator was free)")
        try:
            async with asyncio.timeout(self._timeout):
                if evaluator.version != loaded.version:
                    evaluator.version = None
                    if (await evaluator.call(loaded.load_frame()))[:1] != b"K":
                        raise _EvaluatorFault("the evaluator could not hold the version")
                    evaluator.version = loaded.version
                reply = await evaluator.call(b"E" + payload.encode())
        except TimeoutError:
            self._replace(evaluator, "policy_evaluation_timeout")
            overran = f"{self._timeout * 1000:.0f} ms"
            return Outcome(error=f"policy timeout (the evaluation overran {overran})")
        except (OSError, EOFError, _EvaluatorFault) as exc:  # IncompleteReadError is an EOFError
            self._replace(evaluator, "policy_evaluator_died", error=repr(exc))
            return Outcome(error=f"the policy evaluator failed ({type(exc).__name__})")
        except BaseException:
            # Cancelled mid-call: its reply would be read by the next caller. Replace it.
            self._replace(evaluator, "policy_evaluation_cancelled")
            raise
        self._idle.put_nowait(evaluator)
        return _outcome(reply)

    async def close(self) -> None:
        """Stop every evaluator and any being started."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        evaluators, self._all = list(self._all), set()
        await asyncio.gather(*(e.stop() for e in evaluators), return_exceptions=True)

    # -- internals -----------------------------------------------------------

    async def _idle_evaluator(self) -> _Evaluator:
        """The next idle evaluator still alive; one that died while idle is replaced."""
        while True:
            evaluator = await self._idle.get()
            if evaluator.process.returncode is None:
                return evaluator
            self._replace(evaluator, "policy_evaluator_died", error="exited while idle")

    def _replace(self, evaluator: _Evaluator, event: str, **detail: Any) -> None:
        """Kill ``evaluator`` (fail closed) and start another in the background."""
        log.error(event, pid=evaluator.pid, version=evaluator.version, **detail)
        evaluator.kill()
        self._all.discard(evaluator)
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._restart(evaluator))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _restart(self, dead: _Evaluator) -> None:
        await dead.process.wait()
        await self._start_one()

    async def _start_one(self) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *_command(self._memory_mib),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=_environment(),
            )
        except OSError as exc:
            self._last_start_error = str(exc)
            log.error("policy_evaluator_not_started", error=str(exc))
            return
        evaluator = _Evaluator(process)
        if self._closed:
            await evaluator.stop()
            return
        self._all.add(evaluator)
        self._idle.put_nowait(evaluator)


class _EvaluatorFault(Exception):
    """The evaluator answered something other than the protocol says."""


def _outcome(reply: bytes) -> Outcome:
    kind, body = reply[:1], reply[1:]
    if kind in (b"V", b"I"):
        return Outcome(value=json.loads(body), interpreted=kind == b"I")
    if kind == b"X":
        return Outcome(error=body.decode(errors="replace"))
    return Outcome(error=f"unexpected evaluator reply {kind!r}")
