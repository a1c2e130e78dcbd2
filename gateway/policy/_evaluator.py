"""A policy evaluator process: the child side of ``gateway.policy.sandbox``.

Run as ``python -m gateway.policy._evaluator [memory limit in MiB]``. It reads
frames from stdin and answers each with one frame on stdout, one at a time,
until stdin closes. It imports regorus and the thin helpers over it, nothing
of the gateway's database or web layers, so it starts in a few tens of ms.

With ``--job`` after the limit it does one job instead (``gateway.policy._jobs``):
it reads ``{"job", "args"}`` as JSON from stdin, writes the job's JSON result to
stdout and exits.

A frame is a 4-byte big-endian length, then that many bytes; a request's first
byte names the operation:

* ``L`` + JSON ``{"version", "sources": [[path, text], ...], "program": base64 | null}``:
  hold this version (the VM program when the VM decides it). Answer ``K``.
* ``E`` + the input JSON: decide it. Answer ``V`` + the decision value as JSON
  (``null`` when undefined), ``I`` + the same when the VM could not evaluate the
  input and the interpreter decided it, or ``X`` + the error text.

Anything else, or an ``E`` before an ``L``, answers ``X``. What it cannot survive
(a regorus abort, the memory limit) ends the process; the parent reads that as
a failed evaluation and starts another.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import struct
import sys
from typing import Any, BinaryIO

from gateway.policy._regorus import (
    Sources,
    first_lines,
    new_interpreter,
    new_vm,
    run_interpreter,
    run_vm,
)

__all__ = ["main"]

_LENGTH = struct.Struct(">I")


class _Evaluator:
    """The version this process holds and the regorus objects made for it."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.sources: Sources = ()
        self.program: bytes | None = None
        self.vm: Any = None
        self.engine: Any = None

    def handle(self, request: bytes) -> bytes:
        op, body = request[:1], request[1:]
        if op == b"E":
            return self.evaluate(body)
        if op == b"L":
            self.load(json.loads(body))
            return b"K"
        return b"X" + f"unknown operation {op!r}".encode()

    def load(self, doc: dict[str, Any]) -> None:
        self.vm = self.engine = None
        self.version = str(doc["version"])
        self.sources = tuple((str(path), str(text)) for path, text in doc["sources"])
        program = doc.get("program")
        self.program = base64.b64decode(program) if program else None

    def evaluate(self, payload: bytes) -> bytes:
        if self.version is None:
            return b"X" + b"no policy loaded in the evaluator"
        text = payload.decode()
        handed = b"V"
        if self.program is not None:
            if self.vm is None:
                self.vm = new_vm(self.program)
            try:
                return b"V" + json.dumps(run_vm(self.vm, text)).encode()
            except Exception:  # its instruction limit, or a conflict guard tripped
                handed = b"I"
        if self.engine is None:
            self.engine = new_interpreter(self.sources)
        return handed + json.dumps(run_interpreter(self.engine, text)).encode()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def main(argv: list[str]) -> int:
    limit_mib = int(argv[0]) if argv else 0
    if limit_mib > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit_mib << 20, limit_mib << 20))
    # The replies get a descriptor of their own; anything printed goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    if argv[1:] == ["--job"]:
        from gateway.policy._jobs import run

        replies.write(json.dumps(run(json.loads(requests.read()))).encode())
        replies.flush()
        return 0
    evaluator = _Evaluator()
    while True:
        header = _read_exactly(requests, _LENGTH.size)
        if header is None:
            return 0
        request = _read_exactly(requests, _LENGTH.unpack(header)[0])
        if request is None:
            return 0
        try:
            reply = evaluator.handle(request)
        except BaseException as exc:  # pyo3 panics are BaseException; answer, never die
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            reply = b"X" + first_lines(exc).encode()
        replies.write(_LENGTH.pack(len(reply)) + reply)
        replies.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
