"""Bulk checks of a run (``audit._runs``): hashes.txt read by columns says exactly
what a line-by-line read says, and a run's subtrees extend the tree to the root
the RFC 9162 definition gives."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit._runs import _Levels, decode_hashes, hashes_len
from audit.errors import ProofError
from audit.merkle import CompactRange, root_from_leaf_hashes


def _rows(lo: int, hi: int, seed: int) -> tuple[bytes, bytes]:
    """hashes.txt lines for seqs [lo, hi) as export_bundle writes them, and their hashes."""
    blob = b"".join(hashlib.sha256(b"%d-%d" % (seed, i)).digest() * 2 for i in range(lo, hi))
    text = "".join(
        f"{s} {blob[64 * i : 64 * i + 32].hex()} {blob[64 * i + 32 : 64 * i + 64].hex()}\n"
        for i, s in enumerate(range(lo, hi))
    )
    return text.encode(), blob


@settings(max_examples=200, deadline=None)
@given(
    lo=st.one_of(st.integers(0, 200), st.sampled_from([9, 95, 990, 9_995, 99_990, 999_999])),
    count=st.integers(1, 40),
    seed=st.integers(0, 3),
    at=st.integers(0, 10**6),
    delta=st.integers(1, 255),
)
def test_hashes_rows_decode_exactly_and_any_changed_byte_shows(
    lo: int, count: int, seed: int, at: int, delta: int
) -> None:
    region, blob = _rows(lo, lo + count, seed)
    assert hashes_len(lo, lo + count) == len(region)
    assert decode_hashes(region, lo, lo + count) == blob
    bad = bytearray(region)
    at %= len(bad)
    bad[at] = (bad[at] + delta) % 256
    got = decode_hashes(bytes(bad), lo, lo + count)
    if bytes(bad).lower() == region:  # a hex letter upper-cased reads the same, as alone
        assert got == blob
    else:
        assert got != blob
    assert decode_hashes(region[:-1], lo, lo + count) is None
    assert decode_hashes(region + b"\n", lo, lo + count) is None


@settings(max_examples=100, deadline=None)
@given(first=st.integers(0, 300), n=st.integers(1, 300), cut=st.integers(0, 300))
def test_a_runs_subtrees_extend_the_tree_to_the_same_root(first: int, n: int, cut: int) -> None:
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(first + n)]
    levels = _Levels(leaves[first:], first)
    size = first + 1 + cut % n  # a checkpoint somewhere inside the run
    for end in (size, first + n):
        cr = CompactRange()
        for h in leaves[:first]:
            cr.append(h)
        for level, h in levels.cover(first, end):
            cr.push(h, level)
        assert cr.size == end
        assert cr.root() == root_from_leaf_hashes(leaves[:end])


def test_a_subtree_cannot_be_pushed_out_of_line() -> None:
    cr = CompactRange()
    cr.append(bytes(32))
    with pytest.raises(ProofError):
        cr.push(bytes(32), 1)
