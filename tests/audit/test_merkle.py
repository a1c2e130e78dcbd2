"""RFC 9162 tree hashing and proofs: published vectors, a naive second implementation,
and corrupted proofs that must be refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.errors import ProofError
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_at,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.audit import reference as ref

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc9162.json").read_text())


def _store(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete subtree hash, as the store keeps them (leaves at level 0)."""
    cr = CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    for i, d in enumerate(leaves):
        lh = leaf_hash(d)
        nodes[(0, i)] = lh
        for level, idx, h in cr.append(lh):
            nodes[(level, idx)] = h
    return nodes


def _fetch(nodes: dict[tuple[int, int], bytes]):  # type: ignore[no-untyped-def]
    return lambda wanted: {n: nodes[n] for n in wanted if n in nodes}


@pytest.mark.parametrize("name", ["published", "generated"])
def test_roots_match_vectors(name: str) -> None:
    v = VECTORS[name]
    leaves = [bytes.fromhex(x) for x in v["leaves"]]
    roots = v["roots"]
    items = enumerate(roots) if isinstance(roots, list) else ((int(k), r) for k, r in roots.items())
    nodes = _store(leaves)
    for n, want in items:
        assert root_from_leaf_hashes(leaf_hash(x) for x in leaves[:n]).hex() == want
        assert root_at(n, _fetch(nodes)).hex() == want


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == VECTORS["published"]["roots"][0]
    assert CompactRange().root() == EMPTY_ROOT


@pytest.mark.parametrize("name", ["published", "generated"])
def test_inclusion_proofs_match_vectors(name: str) -> None:
    v = VECTORS[name]
    leaves = [bytes.fromhex(x) for x in v["leaves"]]
    nodes = _store(leaves)
    for case in v["inclusion"]:
        i, n = case["index"], case["size"]
        got = inclusion_proof(i, n, _fetch(nodes))
        assert [h.hex() for h in got] == case["path"], (i, n)
        verify_inclusion(leaf_hash(leaves[i]), i, n, got, ref.mth(leaves[:n]))


@pytest.mark.parametrize("name", ["published", "generated"])
def test_consistency_proofs_match_vectors(name: str) -> None:
    v = VECTORS[name]
    leaves = [bytes.fromhex(x) for x in v["leaves"]]
    nodes = _store(leaves)
    for case in v["consistency"]:
        a, b = case["old"], case["new"]
        got = consistency_proof(a, b, _fetch(nodes))
        assert [h.hex() for h in got] == case["proof"], (a, b)
        verify_consistency(a, b, ref.mth(leaves[:a]), ref.mth(leaves[:b]), got)


def test_against_naive_implementation_over_many_sizes() -> None:
    leaves = [i.to_bytes(3, "big") for i in range(140)]
    nodes = _store(leaves)
    fetch = _fetch(nodes)
    for n in range(1, 141):
        root = ref.mth(leaves[:n])
        assert root_at(n, fetch) == root
        for i in range(0, n, max(1, n // 17)):
            assert inclusion_proof(i, n, fetch) == ref.path(i, leaves[:n])
        for m in range(1, n + 1, max(1, n // 13)):
            assert consistency_proof(m, n, fetch) == ref.proof(m, leaves[:n])


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=60), st.data())
def test_random_trees_agree_with_naive(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    nodes = _store(leaves)
    i = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(1, n))
    assert root_at(n, _fetch(nodes)) == ref.mth(leaves)
    assert inclusion_proof(i, n, _fetch(nodes)) == ref.path(i, leaves)
    assert consistency_proof(m, n, _fetch(nodes)) == ref.proof(m, leaves)


def _inclusion_probes(i: int, n: int, proof: list[bytes], root: bytes, leaf: bytes):  # type: ignore[no-untyped-def]
    some = bytes.fromhex("abacaba0" * 8)
    probes = [
        (i - 1, n, proof, root, leaf),
        (i + 1, n, proof, root, leaf),
        (i ^ 2, n, proof, root, leaf),
        (i, n * 2, proof, root, leaf),
        (i, n // 2, proof, root, leaf),
        (i, n, proof, root, leaf_hash(b"WrongLeaf")),
        (i, n, proof, EMPTY_ROOT, leaf),
        (i, n, proof, some, leaf),
        (i, n, [*proof, root], root, leaf),
        (i, n, [root, *proof], root, leaf),
    ]
    for k in range(len(proof)):
        bad = list(proof)
        bad[k] = bytes([bad[k][0] ^ 8]) + bad[k][1:]
        probes.append((i, n, bad, root, leaf))
    if proof:
        probes.append((i, n, proof[:-1], root, leaf))
    if len(proof) > 1:
        probes.append((i, n, [proof[0], some, *proof[1:]], root, leaf))
    return probes


def test_corrupted_inclusion_proofs_are_refused() -> None:
    leaves = [bytes([i]) for i in range(70)]
    nodes = _store(leaves)
    for n in (1, 2, 3, 5, 8, 13, 64, 70):
        root = ref.mth(leaves[:n])
        for i in range(n):
            proof = inclusion_proof(i, n, _fetch(nodes))
            for pi, pn, pp, pr, pl in _inclusion_probes(i, n, proof, root, leaf_hash(leaves[i])):
                if (pi, pn, pp, pr, pl) == (i, n, proof, root, leaf_hash(leaves[i])):
                    continue
                with pytest.raises(ProofError):
                    verify_inclusion(pl, pi, pn, pp, pr)


def test_corrupted_consistency_proofs_are_refused() -> None:
    leaves = [bytes([i]) for i in range(40)]
    nodes = _store(leaves)
    wrong = leaf_hash(b"WrongRoot")
    for n in range(2, 41):
        for m in range(1, n):
            r1, r2 = ref.mth(leaves[:m]), ref.mth(leaves[:n])
            proof = consistency_proof(m, n, _fetch(nodes))
            verify_consistency(m, n, r1, r2, proof)
            probes = [
                (m - 1, n, r1, r2, proof),
                (m + 1, n, r1, r2, proof),
                (m ^ 2, n, r1, r2, proof),
                (m, n * 2, r1, r2, proof),
                (m, n // 2, r1, r2, proof),
                (m, n, wrong, r2, proof),
                (m, n, r1, wrong, proof),
                (m, n, r2, r1, proof),
                (m, n, r1, r2, []),
                (m, n, r1, r2, [*proof, r1]),
                (m, n, r1, r2, [*proof, r2]),
                (m, n, r1, r2, [r1, *proof]),
                (m, n, r1, r2, [r2, *proof]),
                (m, n, r1, r2, [proof[0], *proof]),
                (m, n, r1, r2, proof[:-1]),
            ]
            for k in range(len(proof)):
                bad = list(proof)
                bad[k] = bytes([bad[k][0] ^ 16]) + bad[k][1:]
                probes.append((m, n, r1, r2, bad))
            for a, b, x, y, p in probes:
                if (a, b, x, y, p) == (m, n, r1, r2, proof):
                    continue
                with pytest.raises(ProofError):
                    verify_consistency(a, b, x, y, p)


def test_trivial_consistency_cases() -> None:
    r1, r2 = leaf_hash(b"1"), leaf_hash(b"2")
    verify_consistency(0, 0, r1, r1, [])
    verify_consistency(0, 5, r1, r2, [])
    verify_consistency(3, 3, r2, r2, [])
    for args in [(1, 1, r1, r2, []), (1, 0, r1, r2, []), (1, 2, r1, r2, []), (0, 1, r1, r1, [r1])]:
        with pytest.raises(ProofError):
            verify_consistency(*args)  # type: ignore[arg-type]


def test_out_of_range_requests_raise() -> None:
    nodes = _store([b"a", b"b"])
    with pytest.raises(ProofError):
        inclusion_proof(2, 2, _fetch(nodes))
    with pytest.raises(ProofError):
        consistency_proof(3, 2, _fetch(nodes))
    with pytest.raises(ProofError):
        inclusion_proof(0, 2, lambda w: {})  # a store missing nodes is reported, not guessed


def test_compact_range_round_trips_and_rejects_wrong_sizes() -> None:
    cr = CompactRange()
    for i in range(23):
        cr.append(leaf_hash(bytes([i])))
    back = CompactRange.from_bytes(23, cr.to_bytes())
    assert back.root() == cr.root() == ref.mth([bytes([i]) for i in range(23)])
    with pytest.raises(ProofError):
        CompactRange.from_bytes(24, cr.to_bytes())
    with pytest.raises(ProofError):
        CompactRange.from_bytes(23, cr.to_bytes()[:-1])


@given(st.integers(0, 300), st.lists(st.integers(0, 300), max_size=6))
def test_extend_equals_appending_one_by_one(start: int, cuts: list[int]) -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(start + 300)]
    one = CompactRange()
    for h in leaves[:start]:
        one.append(h)
    bulk = one.copy()
    at = start
    for c in sorted(cuts):
        bulk.extend(leaves[at : start + c])
        at = max(at, start + c)
    bulk.extend(leaves[at:])
    for h in leaves[start:]:
        one.append(h)
    assert (bulk.size, bulk.hashes) == (one.size, one.hashes)
    assert bulk.root() == ref.mth([i.to_bytes(2, "big") for i in range(start + 300)])
