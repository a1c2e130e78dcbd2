"""Inclusion and consistency proofs (RFC 9162 §2.1.3–2.1.4) served from the stored log.

Every node a proof needs is fetched at once (``reads.NodeReader``), for the proof
and the roots it is checked against alike. An inclusion proof comes, by default,
against the newest checkpoint that covers the entry, with that checkpoint's note
and cosignatures, so a client can check it without trusting the server.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit import merkle, reads, store
from audit.errors import NotFound
from audit.merkle import consistency_ranges, inclusion_ranges, range_nodes, root_at
from audit.records import ConsistencyProof, InclusionProof

__all__ = ["consistency_proof", "inclusion_proof"]


def _needed(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every stored subtree the leaf ranges need (the last leaf of [0, seq+1) is the leaf)."""
    return sorted({n for a, b in ranges if a < b for n in range_nodes(a, b)})


def _covering_checkpoint(conn: sa.Connection, size: int) -> str | None:
    row = conn.execute(
        sa.select(store.checkpoints.c.note).where(store.checkpoints.c.size == size)
    ).first()
    return None if row is None else str(row[0]) + "".join(reads.cosignature_lines(conn, size))


def inclusion_proof(engine: Engine, seq: int, tree_size: int | None = None) -> InclusionProof:
    """Proof that entry ``seq`` is in the tree of ``tree_size`` leaves.

    Without ``tree_size``: against the latest checkpoint that covers ``seq``,
    else against the current head (then ``checkpoint`` is None).
    """
    with engine.connect() as conn:
        h = reads.read_head(conn)
        if tree_size is None:
            latest = conn.execute(sa.select(sa.func.max(store.checkpoints.c.size))).scalar()
            tree_size = int(latest) if latest is not None and int(latest) > seq else h.size
        if not 0 < tree_size <= h.size:
            raise NotFound(f"no tree of {tree_size} entries: the log has {h.size}")
        if not 0 <= seq < tree_size:
            raise NotFound(f"entry {seq} is not in the tree of {tree_size} entries")
        nodes = reads.NodeReader(conn)
        nodes(_needed([(0, seq + 1), *inclusion_ranges(seq, tree_size), (0, tree_size)]))
        path = merkle.inclusion_proof(seq, tree_size, nodes)
        return InclusionProof(
            seq=seq,
            tree_size=tree_size,
            leaf_hash=nodes([(0, seq)])[(0, seq)],
            hashes=tuple(path),
            root=h.root if tree_size == h.size else root_at(tree_size, nodes),
            checkpoint=_covering_checkpoint(conn, tree_size),
        )


def consistency_proof(engine: Engine, old_size: int, new_size: int) -> ConsistencyProof:
    """Proof that the tree of ``new_size`` leaves extends the one of ``old_size``."""
    with engine.connect() as conn:
        h = reads.read_head(conn)
        if not 0 <= old_size <= new_size <= h.size:
            raise NotFound(f"no consistency proof {old_size} -> {new_size} (size {h.size})")
        nodes = reads.NodeReader(conn)
        ranges = consistency_ranges(old_size, new_size)
        nodes(_needed([*ranges, (0, old_size), (0, new_size)]))
        return ConsistencyProof(
            old_size=old_size,
            new_size=new_size,
            old_root=root_at(old_size, nodes),
            new_root=h.root if new_size == h.size else root_at(new_size, nodes),
            hashes=tuple(merkle.consistency_proof(old_size, new_size, nodes)),
        )
