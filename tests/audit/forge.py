"""What an operator with full database access could write: a log built row by row.

Used by the tamper suite to rewrite history consistently (every leaf, chain link,
tree node, head and re-signed checkpoint recomputed), which only a witnessed
checkpoint can expose. Works on any store ``audit.store`` supports.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from audit import store
from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.entry import ZERO_CHAIN, chain_hash, parse_entry
from audit.merkle import CompactRange, leaf_hash
from audit.note import NoteSigner


def forge_log(
    engine: sa.Engine,
    datas: Sequence[bytes],
    signer: NoteSigner | None,
    checkpoint_sizes: Sequence[int] = (),
) -> None:
    """Write ``datas`` as a complete, self-consistent log into an empty schema."""
    store.create_schema(engine)
    cr = CompactRange()
    chain = ZERO_CHAIN
    rows, nodes, cps = [], [], []
    for seq, data in enumerate(datas):
        doc = parse_entry(data)
        lh = leaf_hash(data)
        chain = chain_hash(chain, lh)
        for level, idx, h in cr.append(lh):
            nodes.append({"level": level, "idx": idx, "hash": h})
        rows.append(
            {
                "seq": seq,
                "ts": doc.get("ts", "2026-01-01T00:00:00.000Z"),
                "event": doc.get("event", "admin"),
                "exchange_id": doc.get("exchange_id"),
                "subject": doc.get("subject"),
                "data": data,
                "leaf_hash": lh,
                "chain_hash": chain,
            }
        )
        if signer is not None and seq + 1 in checkpoint_sizes:
            root = cr.root()
            note = sign_checkpoint(Checkpoint(signer.name, seq + 1, root), signer)
            cps.append({"size": seq + 1, "root": root, "note": note, "ts": rows[-1]["ts"]})
    with engine.begin() as conn:
        if rows:
            conn.execute(store.entries.insert(), rows)
        if nodes:
            conn.execute(store.nodes.insert(), nodes)
        if cps:
            conn.execute(store.checkpoints.insert(), cps)
        conn.execute(
            store.head.update()
            .where(store.head.c.id == 1)
            .values(size=len(datas), chain_hash=chain, frontier=cr.to_bytes())
        )
