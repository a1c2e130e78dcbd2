"""RFC 9162 Merkle tree hashing, proofs and proof verification.

Everything here is pure: proofs are built from *complete aligned subtrees*
(``(level, index)`` nodes covering leaves ``[index*2^level, (index+1)*2^level)``),
which the store keeps as entries are appended. Any range that RFC 9162's
recursive definitions need splits into O(log n) such nodes, so serving a proof
never reads the whole log. Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2
literally and raises ``ProofError`` on any mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from audit.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "NodeFetcher",
    "consistency_proof",
    "consistency_ranges",
    "fold",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "range_nodes",
    "root_at",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]
NodeFetcher = Callable[[Sequence[Node]], dict[Node, bytes]]


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_pow2_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """Split ``[start, end)`` into complete aligned subtrees, left to right.

    Valid for the ranges RFC 9162's recursion produces (``start`` aligned to a
    power of two at least ``end - start``), which is all this module asks for.
    """
    nodes: list[Node] = []
    while start < end:
        size = 1 << ((end - start).bit_length() - 1)
        while start % size:
            size >>= 1
        level = size.bit_length() - 1
        nodes.append((level, start >> level))
        start += size
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of ``range_nodes`` (left to right) into the range's MTH."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PATH(index, D[size]), leaf end first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}", code="audit_bad_range")
    out: list[tuple[int, int]] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _largest_pow2_below(hi - lo)
        if m < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m = lo + k, m - k
    out.reverse()
    return out


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PROOF(old, D[new]) (RFC 9162 §2.1.4.1)."""
    if not 0 <= old <= new:
        raise ProofError(f"no consistency proof from {old} to {new}", code="audit_bad_range")
    if old in (0, new):
        return []
    out: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, new, old, True
    while True:
        if m == hi - lo:
            if not whole:
                out.append((lo, hi))
            break
        k = _largest_pow2_below(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    out.reverse()
    return out


def _materialise(ranges: Sequence[tuple[int, int]], fetch: NodeFetcher) -> list[bytes]:
    per_range = [range_nodes(a, b) for a, b in ranges]
    wanted = sorted({n for nodes in per_range for n in nodes})
    got = fetch(wanted)
    missing = [n for n in wanted if n not in got]
    if missing:
        raise ProofError(f"tree nodes missing from the store: {missing[:4]}", code="audit_corrupt")
    return [fold([got[n] for n in nodes]) for nodes in per_range]


def inclusion_proof(index: int, size: int, fetch: NodeFetcher) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree of ``size`` leaves."""
    return _materialise(inclusion_ranges(index, size), fetch)


def consistency_proof(old: int, new: int, fetch: NodeFetcher) -> list[bytes]:
    """The consistency proof between tree sizes ``old`` and ``new``."""
    return _materialise(consistency_ranges(old, new), fetch)


def root_at(size: int, fetch: NodeFetcher) -> bytes:
    """MTH of the first ``size`` leaves, from at most log2(size) stored nodes."""
    return _materialise([(0, size)], fetch)[0] if size else EMPTY_ROOT


def root_from_leaf_hashes(leaves: Iterable[bytes]) -> bytes:
    """MTH over leaf hashes held in memory (exports, tests)."""
    cr = CompactRange()
    for h in leaves:
        cr.append(h)
    return cr.root()


class CompactRange:
    """The right edge of a growing tree: one hash per set bit of ``size``.

    ``append`` returns the complete interior nodes it finished, which is what the
    store writes so proofs can be served later without rereading leaves.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ProofError("compact range does not match its size", code="audit_corrupt")
        self.size = size
        self.hashes = list(hashes)

    @classmethod
    def from_bytes(cls, size: int, blob: bytes) -> CompactRange:
        if len(blob) % 32:
            raise ProofError("compact range blob is not whole hashes", code="audit_corrupt")
        return cls(size, [blob[i : i + 32] for i in range(0, len(blob), 32)])

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        made: list[tuple[int, int, bytes]] = []
        self.hashes.append(leaf)
        self.size += 1
        level = 0
        while (self.size >> level) & 1 == 0:
            right = self.hashes.pop()
            left = self.hashes.pop()
            level += 1
            h = node_hash(left, right)
            self.hashes.append(h)
            made.append((level, (self.size >> level) - 1, h))
        return made

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaves fast: whole aligned subtrees are hashed level by level.

        Same result as ``append`` per leaf (a test checks it) without the per-leaf
        Python bookkeeping; the interior nodes are not returned.
        """
        sha = hashlib.sha256
        i, n = 0, len(leaves)
        while i < n:
            low = self.size & -self.size if self.size else 1 << 62
            block = min(low, 1 << ((n - i).bit_length() - 1))
            level = list(leaves[i : i + block])
            while len(level) > 1:
                level = [
                    sha(b"\x01" + a + b).digest()
                    for a, b in zip(level[0::2], level[1::2], strict=True)
                ]
            self.push(level[0], block.bit_length() - 1)
            i += block

    def push(self, h: bytes, level: int) -> None:
        """Add the hash of a complete subtree of 2^level leaves; ``size`` must be a
        multiple of 2^level (the subtree starts where the range ends)."""
        if self.size & ((1 << level) - 1):
            raise ProofError("a subtree must start at a multiple of its size", code="audit_corrupt")
        self.hashes.append(h)
        self.size += 1 << level
        while (self.size >> level) & 1 == 0:
            right = self.hashes.pop()
            left = self.hashes.pop()
            self.hashes.append(node_hash(left, right))
            level += 1

    def root(self) -> bytes:
        return fold(self.hashes)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2; raises ``ProofError`` unless the path leads to ``root``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside tree size {size}")
    if any(len(p) != 32 for p in proof):
        raise ProofError("proof hashes must be 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2; raises ``ProofError`` unless ``new`` extends ``old``."""
    if not 0 <= old <= new:
        raise ProofError(f"tree size {new} cannot extend {old}")
    if any(len(p) != 32 for p in proof):
        raise ProofError("proof hashes must be 32 bytes")
    if old == new:
        if proof or old_root != new_root:
            raise ProofError("same size but different roots (or a non-empty proof)")
        return
    if old == 0:
        if proof:
            raise ProofError("consistency from the empty tree takes an empty proof")
        return
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    if not path:
        raise ProofError("empty consistency proof")
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not match the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not match the new root")
