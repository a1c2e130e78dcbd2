"""Check an export's entries on several cores: chunks of entries.jsonl in worker processes.

``entries.jsonl`` is cut into byte ranges at line ends, a few per process; this
process and its workers each take the next free one. Whoever takes a range reads
it and the matching lines of ``hashes.txt`` itself (nothing big crosses a pipe), a
megabyte at a time, and runs ``check_run`` over each block, starting its chain
checks from the *stored* link just before the chunk; it answers with the runs it
found whole (a few hashes each). Where a chunk starts is the seq its first entry
claims (one JSON parse a chunk), only a hint: the verifier accepts runs strictly in
order and only if each starts at the seq and the chain hash the previous one ended
with (``ChainVerifier.accept_run``), so a lying hint, a bad block or a broken join
just stops the parallel part there; the entry-by-entry path takes over from that
point and names the first damage exactly as it would alone.

Workers are plain functions of picklable arguments, so every start method works.
``fork`` is used when this process runs no other thread (it is the cheapest), else
``forkserver`` or ``spawn``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

from audit._runs import (
    MAX_LINE,
    Run,
    check_run,
    claimed_seq,
    decode_hashes,
    hashes_len,
    leaf_hashes,
)
from audit.errors import AuditError

if TYPE_CHECKING:  # POSIX-only names
    from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
    from multiprocessing.sharedctypes import Synchronized

    Context = ForkContext | ForkServerContext | SpawnContext

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "BLOCK",
    "MAX_JOBS",
    "Chunk",
    "check_chunk",
    "default_jobs",
    "map_in_order",
    "plan",
    "run_chunks",
    "worker_context",
]

# Workers pay for themselves from about this much of entries.jsonl on: ``fork``
# starts one in a few ms, ``forkserver``/``spawn`` in ~0.3-0.8 s (a fresh
# interpreter importing this package), against ~2 us an entry (~500 bytes) here.
MIN_SPLIT = 8 << 20
MIN_SPLIT_COLD = 256 << 20
MAX_JOBS = 8
MIN_STEP = 1 << 20  # the smallest range handed out (~2,000 entries, ~4 ms)
BLOCK = 1 << 20  # bytes of entries a worker reads, splits and checks at a time


def default_jobs() -> int:
    """One worker per core, at most ``MAX_JOBS`` (beyond that the disk is the limit)."""
    return max(1, min(os.cpu_count() or 1, MAX_JOBS))


@dataclass(frozen=True)
class Chunk:
    """A piece of the work: the entry lines in bytes ``[lo, hi)`` of entries.jsonl."""

    entries: str
    hashes: str
    lo: int
    hi: int
    start: int  # the bundle's first seq, where hashes.txt begins
    end: int  # one past its last seq
    prev_chain: bytes  # the manifest's chain hash before ``start``
    sizes: tuple[int, ...]  # checkpoint sizes
    full: bool
    block: int = BLOCK  # bytes read, split and checked at a time


def plan(path: Path, jobs: int, chunk_bytes: int | None = None) -> list[tuple[int, int]]:
    """Byte ranges of ``path``, each cut just after a newline.

    With ``chunk_bytes``, one every ``chunk_bytes``. By default, once the file is
    big enough for workers to pay, each range is ``1 / (2 * jobs)`` of what is left
    (at least ``MIN_STEP``): big ranges first, small ones last, so the processes
    taking them finish together even if one of them runs slower. One range means:
    no workers.
    """
    size = path.stat().st_size
    if chunk_bytes is None:
        fork = worker_context().get_start_method() == "fork"
        if jobs < 2 or size < (MIN_SPLIT if fork else MIN_SPLIT_COLD):
            return [(0, size)] if size else []
    cuts = [0]
    with open(path, "rb") as f:
        while True:
            step = chunk_bytes or max((size - cuts[-1]) // (2 * jobs), MIN_STEP)
            c = cuts[-1] + step
            if c >= size:
                break
            f.seek(c - 1)
            at = f.read(MAX_LINE + 2).find(b"\n")
            if at < 0 or c + at >= size:  # (a line too long: whoever checks the rest says so)
                break
            cuts.append(c + at)
    cuts.append(size)
    return list(pairwise(cuts))


class _Off(Exception):
    """The chunk's bytes are not whole lines of a sane length."""


def _blocks(f: BinaryIO, lo: int, hi: int, block: int) -> Iterator[tuple[int, list[bytes]]]:
    """The lines in bytes ``[lo, hi)`` of ``f``, a block at a time, each with the
    offset just past it. Small blocks keep reusing the same memory: a forked worker
    then copies few pages, and nothing grows with the chunk."""
    at = lo
    while at < hi:
        f.seek(at)
        want = min(block, hi - at)
        piece = f.read(want)
        if len(piece) != want:
            raise _Off  # the file shrank under us
        lines = piece.split(b"\n")
        rest = len(lines.pop())  # a line cut by the block: read again with the next one
        if len(lines) == 0 and want < hi - at and want <= MAX_LINE:
            block *= 2  # a line longer than the block
            continue
        if not lines or (rest and want == hi - at):
            raise _Off  # a line too long, or no newline at the end
        at += want - rest
        yield at, lines


def check_chunk(chunk: Chunk) -> list[tuple[int, Run]]:
    """The worker: the runs of one chunk that were found whole, in order, each with the
    entries.jsonl offset just past it. It stops at the first run that is off, so
    fewer runs than the chunk holds mean: look closer from where they end."""
    done: list[tuple[int, Run]] = []
    try:
        with open(chunk.entries, "rb") as fe, open(chunk.hashes, "rb") as fh:
            seq, anchor = chunk.start, chunk.prev_chain
            for stop, lines in _blocks(fe, chunk.lo, chunk.hi, chunk.block):
                if not done and chunk.lo > 0:
                    # Where the chunk starts is the seq its first entry claims; the
                    # stored link just before it is where its chain checks start.
                    claimed = claimed_seq(lines[0])
                    if claimed is None or not chunk.start < claimed <= chunk.end:
                        break
                    seq = claimed
                    fh.seek(hashes_len(chunk.start, seq - 1))
                    row = decode_hashes(fh.read(hashes_len(seq - 1, seq)), seq - 1, seq)
                    if row is None:
                        break
                    anchor = row[32:]
                if seq + len(lines) > chunk.end:
                    break
                leaves = leaf_hashes([lines], seq, chunk.full)
                region = fh.read(hashes_len(seq, seq + len(lines)))
                run = (
                    None
                    if leaves is None
                    else check_run(leaves, lines[-1], region, seq, anchor, chunk.sizes)
                )
                if run is None:
                    break
                done.append((stop, run))
                seq, anchor = seq + run.count, run.chain
    except (_Off, OSError, ValueError, AuditError, RecursionError):
        pass  # the entry-by-entry path meets the same problem and reports it
    return done


def worker_context() -> Context:
    """``fork`` while this process runs no other thread, else ``forkserver`` or ``spawn``.

    Forking a process whose other threads may hold locks (OpenSSL's among them) can
    leave a child waiting forever on a lock nobody will release.
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _claim(counter: Synchronized[int], count: int) -> int | None:
    """The next item nobody has taken yet, taken; None when all are."""
    with counter.get_lock():
        i = counter.value
        if i >= count:
            return None
        counter.value = i + 1
        return i


def _serve(
    fn: Callable[[T], R], items: Sequence[T], counter: Synchronized[int], out: Connection
) -> None:
    """A worker process: take the next free item, send back its index and answer."""
    with out:
        while (i := _claim(counter, len(items))) is not None:
            out.send((i, fn(items[i])))


def map_in_order(
    fn: Callable[[T], R], items: Sequence[T], jobs: int, lost: R, method: str | None = None
) -> Generator[R, None, None]:
    """``fn`` of each item, in order, computed by this process and ``jobs - 1`` workers.

    Whoever is free takes the next item (a shared counter), so a process slowed by
    other work on the machine simply takes fewer. Workers answer on a pipe; no
    thread or queue runs here. Stop iterating (close the generator) to kill what is
    still working; an item whose worker died answers ``lost``.
    """
    jobs = min(jobs, len(items))
    if jobs <= 1:
        yield from map(fn, items)
        return
    ctx = cast("Context", multiprocessing.get_context(method)) if method else worker_context()
    counter = ctx.Value("q", 0)
    workers: list[tuple[BaseProcess, Connection]] = []
    try:
        for _ in range(1, jobs):
            inbox, out = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_serve, args=(fn, items, counter, out), daemon=True)
            proc.start()
            out.close()
            workers.append((proc, inbox))
        done: dict[int, R] = {}
        live = [inbox for _, inbox in workers]
        for i in range(len(items)):
            while i not in done:
                if live:  # collect answers; wait for them only when nothing is left to take
                    idle = counter.value >= len(items)
                    for ready in wait(live, timeout=None if idle else 0):
                        inbox = cast("Connection", ready)
                        try:
                            j, answer = inbox.recv()
                        except (EOFError, OSError):  # finished, or died
                            live.remove(inbox)
                            continue
                        done[j] = answer
                    if i in done:
                        break
                j = _claim(counter, len(items))
                if j is not None:
                    done[j] = fn(items[j])
                elif not live:
                    done[i] = lost  # taken by a worker that died
            yield done.pop(i)
    finally:
        for worker, inbox in workers:
            if worker.is_alive():  # still working (we stopped early) or just exiting
                worker.kill()
            worker.join()
            inbox.close()


def run_chunks(
    chunks: Sequence[Chunk], jobs: int, method: str | None = None
) -> Generator[list[tuple[int, Run]], None, None]:
    """Each chunk's runs (``check_chunk``), in order, checked by ``jobs`` processes."""
    return map_in_order(check_chunk, chunks, jobs, [], method)
