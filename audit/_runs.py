"""Check a run of exported entries in bulk: every hash a whole list at a time.

Verifying costs three SHA-256 an entry (leaf, chain link, one tree node), and in
Python the call around each hash costs more than the hashing itself. So nothing
here loops per entry in bytecode: leaves, chain links and each tree level are one
batch call over preimages built by C code (``bytes.split``, ``bytes.join``,
``bytes.fromhex``). The batch is hashed by ``core``: the C extension
``audit._sha256`` when it was built (one call a batch), else ``hashlib`` driven by
``map`` (a few calls an entry, same answers). Chain links need no sequential loop
either: each stored link is checked against the stored link before it, which by
induction is the same as recomputing the chain.

``leaf_hashes`` then ``check_run`` are pure. Together they either vouch for a
whole run (``Run``: what the verifier needs to move past it) or answer None, and
the caller replays the run entry by entry to name the damage. They run in the
verifier's process and in worker processes (``audit._parallel``), so they return
only picklable data.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat

from audit.entry import MAX_ENTRY_BYTES, verify_sealed
from audit.errors import AuditError
from audit.merkle import range_nodes

__all__ = [
    "HASHLIB",
    "MAX_LINE",
    "NATIVE",
    "NATIVE_SHA256",
    "Core",
    "Run",
    "check_run",
    "claimed_seq",
    "core",
    "decode_hashes",
    "hashes_len",
    "leaf_hashes",
]

# A hashes.txt line is "SEQ LEAF CHAIN\n": the seq's digits, then this many bytes.
_TAIL = 1 + 64 + 1 + 64 + 1
# Longest entry line (without its newline) the bulk path takes; longer ones go to
# the entry-by-entry path, which reports them.
MAX_LINE = MAX_ENTRY_BYTES + 1

Subtrees = tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class Run:
    """A run of entries found whole; what the verifier needs to move past it."""

    first: int  # seq of the first entry
    count: int
    anchor: bytes  # the chain hash the run's first link was checked from
    chain: bytes  # the chain hash of its last entry
    subtrees: Subtrees  # (level, hash) of the aligned subtrees covering it, left to right
    prefixes: dict[int, Subtrees]  # per checkpoint size inside: subtrees of [first, size)
    last: bytes  # its last entry (the order checks compare the next one with it)


def _widths(lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
    """Split seqs ``[lo, hi)`` where their decimal width changes."""
    while lo < hi:
        digits = len(str(lo))
        top = min(hi, 10**digits)
        yield lo, top, digits
        lo = top


def hashes_len(lo: int, hi: int) -> int:
    """Bytes that seqs ``[lo, hi)`` take in a hashes.txt as ``export_bundle`` writes it."""
    return sum((b - a) * (d + _TAIL) for a, b, d in _widths(lo, hi))


def _digit_column(lo: int, hi: int, place: int) -> bytes:
    """The ASCII digit at ``10**place`` of every number in ``[lo, hi)``, in order."""
    step = 10**place
    if step <= 100:  # a short repeating pattern
        period = b"".join(b"%d" % q * step for q in range(10))
        off = lo % len(period)
        return (period * ((off + hi - lo) // len(period) + 1))[off : off + hi - lo]
    return b"".join(
        b"%d" % (q % 10) * (min(hi, (q + 1) * step) - max(lo, q * step))
        for q in range(lo // step, (hi - 1) // step + 1)
    )


def decode_hashes(region: bytes, lo: int, hi: int) -> bytes | None:
    """``leaf || chain`` (64 bytes) for each line of ``region``, the hashes.txt lines of
    seqs ``[lo, hi)``; None unless every line is exactly ``"%d %s %s\\n"`` of its seq and
    two 32-byte hex hashes (the separators and every seq digit are compared as whole
    columns, then the rest is one ``bytes.fromhex``)."""
    out: list[bytes] = []
    pos = 0
    for a, b, digits in _widths(lo, hi):
        n, width = b - a, digits + _TAIL
        seg = region[pos : pos + n * width]
        pos += n * width
        if len(seg) != n * width:
            return None
        spaces = b" " * n
        if (
            seg[digits::width] != spaces
            or seg[digits + 65 :: width] != spaces
            or seg[width - 1 :: width] != b"\n" * n
        ):
            return None
        hexes = bytearray(seg)
        for k in range(digits):
            if seg[k::width] != _digit_column(a, b, digits - 1 - k):
                return None
            hexes[k::width] = spaces  # fromhex skips whitespace
        try:
            out.append(bytes.fromhex(hexes.decode("ascii")))
        except ValueError:  # not hex, or not ASCII
            return None
    blob = b"".join(out)
    # Whitespace inside a hash would pass fromhex and shorten the blob.
    return blob if pos == len(region) and len(blob) == 64 * (hi - lo) else None


@dataclass(frozen=True)
class Core:
    """What hashes a batch: ``each(prefix, messages)`` is SHA-256(prefix || m) of every
    message, ``strided(prefix, blob, width)`` the same for every ``width``-byte slice of
    ``blob`` (ValueError unless they tile it)."""

    name: str
    each: Callable[[bytes, Sequence[bytes]], list[bytes]]
    strided: Callable[[bytes, bytes, int], list[bytes]]


_HASH = type(hashlib.sha256())


def _hashlib_each(prefix: bytes, messages: Sequence[bytes]) -> list[bytes]:
    """Three C-level passes, no bytecode loop: hashing a copy of a context that already
    holds the prefix skips both the digest lookup of ``hashlib.sha256()`` and a copy of
    each message. Without a prefix, two (nothing to copy in)."""
    if not prefix:
        return list(map(_HASH.digest, map(hashlib.sha256, messages)))
    hashes = list(map(_HASH.copy, repeat(hashlib.sha256(prefix), len(messages))))
    deque(map(_HASH.update, hashes, messages), 0)
    return list(map(_HASH.digest, hashes))


def _hashlib_strided(prefix: bytes, blob: bytes, width: int) -> list[bytes]:
    if width <= 0 or len(blob) % width:
        raise ValueError(f"{len(blob)} bytes are not a whole number of {width}-byte slices")
    return _hashlib_each(prefix, struct.unpack(f"{width}s" * (len(blob) // width), blob))


HASHLIB = Core("hashlib", _hashlib_each, _hashlib_strided)
try:  # built by setup.py when a C compiler and OpenSSL's headers were there
    from audit import _sha256
except ImportError:  # an auditor's plain copy of the package: hashlib does the same
    NATIVE: Core | None = None
else:
    NATIVE = Core("native", _sha256.each, _sha256.strided)
NATIVE_SHA256 = NATIVE is not None
# The core every bulk check here uses. Tests and the benchmark set it to ``HASHLIB``
# to compare; worker processes see the value they were forked with.
core = NATIVE or HASHLIB


class _Levels:
    """Every complete aligned subtree inside ``[first, first + len(leaves))``, level by
    level: level ``k`` holds the nodes ``(k, idx)`` for ``idx`` in ``[lo_k, lo_k + len)``."""

    def __init__(self, leaves: list[bytes], first: int) -> None:
        self.levels = [(first, leaves)]
        lo, level = first, leaves
        while True:
            skip = lo & 1  # an odd first node pairs with one outside the run
            pairs = b"".join(level[skip : skip + (len(level) - skip) // 2 * 2])
            level, lo = core.strided(b"\x01", pairs, 64), (lo + skip) >> 1
            if not level:
                break
            self.levels.append((lo, level))

    def cover(self, lo: int, hi: int) -> Subtrees:
        out = []
        for k, idx in range_nodes(lo, hi):
            base, hashes = self.levels[k]
            out.append((k, hashes[idx - base]))
        return tuple(out)


def leaf_hashes(blocks: Iterable[Sequence[bytes]], first: int, full: bool) -> list[bytes] | None:
    """The leaf hashes of entry lines given in blocks (seqs from ``first``); None if
    there are none, a line is too long, or (``full``) an entry is not canonical,
    schema-valid JSON carrying its seq. Blocks bound how many lines are held at once."""
    leaves: list[bytes] = []
    for lines in blocks:
        if not lines or max(map(len, lines)) > MAX_LINE:
            return None
        if full:
            try:
                for seq, data in enumerate(lines, first + len(leaves)):
                    verify_sealed(data, seq)
            except AuditError:
                return None
        leaves += core.each(b"\x00", lines)
    return leaves or None


def check_run(
    leaves: list[bytes], last: bytes, region: bytes, first: int, anchor: bytes, sizes: Iterable[int]
) -> Run | None:
    """Check a run's leaf hashes (seqs from ``first``, the last entry ``last``) against
    its hashes.txt ``region``, and build its subtrees.

    ``anchor`` is the chain hash before the run; ``sizes`` the checkpoint sizes to
    prepare roots for.
    """
    n = len(leaves)
    pairs = decode_hashes(region, first, first + n)
    if pairs is None:
        return None
    # Link i is checked from the stored link i-1: the preimages sit in ``pairs``
    # already, shifted by one hash (chain_{i-1} || leaf_i).
    links = core.strided(b"", anchor + pairs[:-32], 64)
    both = leaves + links  # interleaved by two slice assignments, then compared whole
    both[::2], both[1::2] = leaves, links
    if b"".join(both) != pairs:
        return None
    end = first + n
    levels = _Levels(leaves, first)
    return Run(
        first=first,
        count=n,
        anchor=anchor,
        chain=links[-1],
        subtrees=levels.cover(first, end),
        prefixes={s: levels.cover(first, s) for s in sizes if first < s <= end},
        last=last,
    )


def claimed_seq(line: bytes) -> int | None:
    """The ``seq`` an entry line says it has: only a hint where a chunk starts."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    seq = doc.get("seq") if isinstance(doc, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None
