"""Evaluator processes: the embedded engine's decisions, bounded in time and memory.

regorus keeps the GIL for a whole evaluation and cannot be interrupted, so a
policy that is slow on some input (an input-sized built-in, a deep
comprehension) would stall every request the gateway serves, and a timeout
could only refuse it after the fact. Evaluating in separate processes
(``gateway.policy._evaluator``) bounds both:

* each decision is written to the least busy evaluator's pipe at once; an
  evaluator decides what it is sent in order, and each answer goes to its
  caller as it is read. The evaluation at the head of an evaluator's queue
  is timed from the moment the evaluator starts on it: one that overruns the
  policy timeout is killed (SIGKILL) with its evaluator, a new evaluator is
  started in the background, the decision is a ``policy_error`` deny, and the
  decisions queued behind it go to another evaluator. A caller waits at most
  twice the policy timeout in all;
* an evaluator runs under an address-space limit (``RLIMIT_AS``), so a policy
  that builds huge values ends its own process, never the gateway's;
* one that dies for any reason (a regorus abort included) is replaced the same
  way; the decision it owed fails closed.

Each evaluator holds one version at a time and is sent the version's sources
(and VM program) before the first decision it gets for it. Writing decisions
without waiting for the previous answer (pipelining) matters: the gateway's
event loop, busy with other requests, reads an answer only once per turn, and
an evaluator that waited for each turn would sit idle most of the time.

Work done once over many inputs (a version's load self-check, the proposal
checks, the impact dry-run) runs in a process of its own (``run_job``), under a
timeout and an address-space limit (the evaluators' for the load self-check,
``JOB_MEMORY_MIB`` for the checks and the dry-run).

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
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import structlog

__all__ = ["EvaluatorPool", "JobFailed", "Outcome", "VersionSources", "run_job"]

log = structlog.get_logger(__name__)

_LENGTH = struct.Struct(">I")
#: The largest answer read from an evaluator (a decision of the shipped policy
#: is a few KiB); a larger one fails the decision and retires the evaluator.
MAX_ANSWER_BYTES = 16 << 20
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

    @property
    def key(self) -> str:
        """What an evaluator holds: a version and its evaluator (a reload can move a
        version from the VM to the interpreter)."""
        return f"{self.version}:{'vm' if self.program is not None else 'interpreter'}"

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


@dataclass
class _Request:
    """One decision sent to an evaluator, until its answer is read."""

    loaded: VersionSources
    frame: bytes
    future: asyncio.Future[Outcome]


class _Evaluator(asyncio.SubprocessProtocol):
    """One evaluator process: what it was sent, in order, until each answer is read.

    ``pending`` holds a ``_Request`` per decision and ``None`` per version sent
    (answered ``K``); the process answers them in order. ``holds`` is what the
    frames sent so far leave it holding (``VersionSources.key``). Answers are parsed in the
    event loop's own callback (a protocol, not a reader task), so an answer
    reaches its caller one loop turn after it arrives.
    """

    def __init__(self, pool: EvaluatorPool) -> None:
        self.pool = pool
        self.holds: str | None = None
        self.pending: deque[_Request | None] = deque()
        self.watchdog: asyncio.TimerHandle | None = None
        self.retired = False
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._buffer = bytearray()

    # -- protocol callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Cast, not isinstance: uvloop's transports do not subclass asyncio's.
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self._stdin = cast(asyncio.WriteTransport, self._transport.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size > MAX_ANSWER_BYTES:
                self._buffer.clear()
                self.pool._died(self, _EvaluatorFault(f"an answer of {size} bytes"))
                return
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                return
            reply = bytes(self._buffer[_LENGTH.size : end])
            del self._buffer[:end]
            self.pool._answered(self, reply)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.pool._died(self, exc or EOFError("the evaluator closed its answers"))

    def process_exited(self) -> None:
        self.pool._died(self, EOFError(f"the evaluator exited ({self.returncode})"))
        if not self.exited.done():
            self.exited.set_result(None)

    # -- the gateway's side ----------------------------------------------------

    @property
    def pid(self) -> int:
        assert self._transport is not None
        return self._transport.get_pid()

    @property
    def returncode(self) -> int | None:
        assert self._transport is not None
        return self._transport.get_returncode()

    def send(self, request: _Request) -> None:
        frames = []
        if self.holds != request.loaded.key:
            frames.append(request.loaded.load_frame())
            self.pending.append(None)
            self.holds = request.loaded.key
        frames.append(request.frame)
        self.pending.append(request)
        assert self._stdin is not None
        self._stdin.write(b"".join(_LENGTH.pack(len(f)) + f for f in frames))

    def kill(self) -> None:
        if self._transport is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    async def stop(self) -> None:
        """Close its stdin (it exits), kill it if it does not, and reap it."""
        if self._stdin is not None:
            self._stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), _EXIT_GRACE_S)
        except TimeoutError:
            self.kill()
            await self.exited
        if self._transport is not None:
            self._transport.close()


class EvaluatorPool:
    """``size`` evaluator processes; each decision goes to the least busy one."""

    def __init__(self, *, size: int, timeout_s: float, memory_mib: int) -> None:
        self._size = size
        self._timeout = timeout_s
        self._memory_mib = memory_mib
        self._all: set[_Evaluator] = set()
        #: Decisions waiting for an evaluator to start (none was running).
        self._parked: list[_Request] = []
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
        """Evaluators running."""
        return sum(1 for e in self._all if e.returncode is None)

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
        """Decide ``payload`` with ``loaded`` on the least busy evaluator.

        The evaluation itself gets the timeout (from the moment the evaluator
        starts on it; then it is killed), and the caller waits at most twice
        that in all: an evaluator busy with others first is never killed for it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        try:
            async with asyncio.timeout(2 * self._timeout):
                self._send(_Request(loaded, b"E" + payload.encode(), future))
                return await future
        except TimeoutError:
            return Outcome(error="policy timeout (no evaluator was free)")

    async def close(self) -> None:
        """Stop every evaluator and any being started; pending decisions fail."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        evaluators, self._all = list(self._all), set()
        closing = Outcome(error="the policy engine is closing")
        for evaluator in evaluators:
            self._forget(evaluator)
            for entry in evaluator.pending:
                _answer(entry, closing)
        for request in self._parked:
            _answer(request, closing)
        await asyncio.gather(*(e.stop() for e in evaluators), return_exceptions=True)

    # -- internals -----------------------------------------------------------

    def _send(self, request: _Request) -> None:
        evaluator = min(self._all, key=lambda e: len(e.pending), default=None)
        if evaluator is None:  # the next one started takes it
            self._parked.append(request)
            return
        was_idle = not evaluator.pending
        evaluator.send(request)
        if was_idle:
            self._arm(evaluator)

    def _arm(self, evaluator: _Evaluator) -> None:
        """Time the evaluation at the head of ``evaluator``'s queue, starting now."""
        if evaluator.watchdog is not None:
            evaluator.watchdog.cancel()
            evaluator.watchdog = None
        if evaluator.pending:
            head = evaluator.pending[0]
            evaluator.watchdog = asyncio.get_running_loop().call_later(
                self._timeout, self._overran, evaluator, head
            )

    def _overran(self, evaluator: _Evaluator, head: _Request | None) -> None:
        if evaluator.pending and evaluator.pending[0] is head and not evaluator.retired:
            overran = f"{self._timeout * 1000:.0f} ms"
            why = f"policy timeout (the evaluation overran {overran})"
            self._retire(evaluator, "policy_evaluation_timeout", why)

    def _answered(self, evaluator: _Evaluator, reply: bytes) -> None:
        """An answer from ``evaluator``: to the caller of the request at its head."""
        if evaluator.retired:
            return
        if not evaluator.pending:
            self._died(evaluator, _EvaluatorFault("an answer nobody asked for"))
            return
        entry = evaluator.pending.popleft()
        if entry is None:  # a version sent
            if reply != b"K":
                self._died(evaluator, _EvaluatorFault("the evaluator could not hold the version"))
                return
        else:
            _answer(entry, _outcome(reply))
        self._arm(evaluator)

    def _died(self, evaluator: _Evaluator, exc: BaseException) -> None:
        why = f"the policy evaluator failed ({type(exc).__name__})"
        self._retire(evaluator, "policy_evaluator_died", why, error=repr(exc))

    def _retire(self, evaluator: _Evaluator, event: str, why: str, **detail: Any) -> None:
        """Kill ``evaluator`` (fail closed): the decision it was on gets ``why``, the
        ones queued behind it go to another evaluator; start a new one."""
        if evaluator.retired:
            return
        log.error(event, pid=evaluator.pid, holds=evaluator.holds, **detail)
        evaluator.kill()
        self._forget(evaluator)
        entries = list(evaluator.pending)
        evaluator.pending.clear()
        if entries and entries[0] is not None:
            _answer(entries.pop(0), Outcome(error=why))
        for entry in entries:
            if entry is not None and not entry.future.done():
                self._send(entry)
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._restart(evaluator))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    def _forget(self, evaluator: _Evaluator) -> None:
        evaluator.retired = True
        self._all.discard(evaluator)
        if evaluator.watchdog is not None:
            evaluator.watchdog.cancel()

    async def _restart(self, dead: _Evaluator) -> None:
        await dead.exited
        await self._start_one()

    async def _start_one(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, evaluator = await loop.subprocess_exec(
                lambda: _Evaluator(self),
                *_command(self._memory_mib),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env=_environment(),
            )
        except OSError as exc:
            self._last_start_error = str(exc)
            log.error("policy_evaluator_not_started", error=str(exc))
            return
        if self._closed:
            evaluator.retired = True
            await evaluator.stop()
            return
        self._all.add(evaluator)
        parked, self._parked = self._parked, []
        for request in parked:
            if not request.future.done():
                self._send(request)


class _EvaluatorFault(Exception):
    """The evaluator answered something other than the protocol says."""


def _answer(entry: _Request | None, outcome: Outcome) -> None:
    if entry is not None and not entry.future.done():
        entry.future.set_result(outcome)


def _outcome(reply: bytes) -> Outcome:
    kind, body = reply[:1], reply[1:]
    if kind in (b"V", b"I"):
        return Outcome(value=json.loads(body), interpreted=kind == b"I")
    if kind == b"X":
        return Outcome(error=body.decode(errors="replace"))
    return Outcome(error=f"unexpected evaluator reply {kind!r}")
