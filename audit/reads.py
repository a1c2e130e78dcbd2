"""Read side of the store: entries, stored tree nodes, checkpoints, proofs.

Proofs ask ``merkle`` which complete subtrees they need and fetch exactly those
rows (leaves from ``audit_entries``, interior nodes from ``audit_nodes``), so a
proof costs two indexed lookups whatever the size of the log.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from audit import store
from audit.errors import NotFound
from audit.merkle import CompactRange, root_at
from audit.records import Head, LogEntry

__all__ = [
    "NodeReader",
    "as_bytes",
    "checkpoint_rows",
    "cosignature_lines",
    "fetch_nodes",
    "iter_entries",
    "read_head",
    "root_of",
    "to_entry",
]

_ENTRY_COLS = (
    store.entries.c.seq,
    store.entries.c.ts,
    store.entries.c.event,
    store.entries.c.exchange_id,
    store.entries.c.subject,
    store.entries.c.data,
    store.entries.c.leaf_hash,
    store.entries.c.chain_hash,
)


def as_bytes(value: Any) -> bytes:
    """A stored blob as bytes, whatever a tampered SQLite column now holds.

    SQLite keeps any type in any column, so a hand-edited row can hold text or a
    number where a hash was; those read as bytes that will not match, never crash.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return b"" if value is None else str(value).encode()


def to_entry(row: sa.Row[Any]) -> LogEntry:
    return LogEntry(
        seq=int(row.seq),
        ts=row.ts,
        event=row.event,
        exchange_id=row.exchange_id,
        subject=row.subject,
        entry_bytes=as_bytes(row.data),
        leaf_hash=as_bytes(row.leaf_hash),
        chain_hash=as_bytes(row.chain_hash),
    )


def entry_select() -> sa.Select[Any]:
    return sa.select(*_ENTRY_COLS)


def read_head(conn: Connection) -> Head:
    row = conn.execute(sa.select(store.head).where(store.head.c.id == 1)).first()
    if row is None:
        raise NotFound("the audit log has no chain head: run create_schema()")
    cr = CompactRange.from_bytes(int(row.size), bytes(row.frontier))
    return Head(int(row.size), bytes(row.chain_hash), cr.root(), row.ts)


def fetch_nodes(
    conn: Connection, wanted: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """Hashes of complete subtrees: level 0 from the entries, higher levels from nodes."""
    out: dict[tuple[int, int], bytes] = {}
    leaves = [idx for level, idx in wanted if level == 0]
    inner = [(level, idx) for level, idx in wanted if level > 0]
    if leaves:
        q = sa.select(store.entries.c.seq, store.entries.c.leaf_hash).where(
            store.entries.c.seq.in_(leaves)
        )
        for seq, h in conn.execute(q):
            out[(0, int(seq))] = as_bytes(h)
    if inner:
        _fetch_inner(conn, inner, out)
    return out


_MAX_TERMS = 64


def _fetch_inner(
    conn: Connection, inner: Sequence[tuple[int, int]], out: dict[tuple[int, int], bytes]
) -> None:
    """Interior nodes by primary key: one range scan per dense level, point lookups else.

    The point lookups are OR-ed in plain SQL (building the expression tree costs more
    than the query) and sent in groups small enough for SQLite's expression limit.
    """
    by_level: dict[int, list[int]] = {}
    for level, idx in inner:
        by_level.setdefault(level, []).append(idx)
    points: list[tuple[int, int]] = []
    for level, idxs in by_level.items():
        if len(idxs) <= 8:
            points.extend((level, i) for i in idxs)
            continue
        wanted = set(idxs)
        q = sa.select(store.nodes.c.idx, store.nodes.c.hash).where(
            store.nodes.c.level == level, store.nodes.c.idx.between(min(idxs), max(idxs))
        )
        for idx, h in conn.execute(q):
            if int(idx) in wanted:
                out[(level, int(idx))] = as_bytes(h)
    for at in range(0, len(points), _MAX_TERMS):
        part = points[at : at + _MAX_TERMS]
        terms = " OR ".join(f"(level = :l{i} AND idx = :x{i})" for i in range(len(part)))
        params: dict[str, int] = {}
        for i, (level, idx) in enumerate(part):
            params[f"l{i}"], params[f"x{i}"] = level, idx
        q2 = sa.text(f"SELECT level, idx, hash FROM audit_nodes WHERE {terms}")  # noqa: S608
        for level, idx, h in conn.execute(q2, params):
            out[(int(level), int(idx))] = as_bytes(h)


class NodeReader:
    """A node fetcher for one connection that remembers what it read.

    Prefetch every node a request needs with one call, then hand the reader to
    ``merkle``: the proof and the root it is checked against cost one query each.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.known: dict[tuple[int, int], bytes] = {}

    def __call__(self, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        missing = [n for n in wanted if n not in self.known]
        if missing:
            self.known.update(fetch_nodes(self.conn, missing))
        return {n: self.known[n] for n in wanted if n in self.known}


def root_of(conn: Connection, size: int) -> bytes:
    return root_at(size, lambda wanted: fetch_nodes(conn, wanted))


def iter_entries(
    conn: Connection, start: int, end: int, chunk: int = 2000
) -> Iterator[sa.Row[Any]]:
    """Rows with ``start <= seq < end`` in order, fetched by keyset pages."""
    cur = start
    while cur < end:
        q = (
            entry_select()
            .where(store.entries.c.seq >= cur, store.entries.c.seq < end)
            .order_by(store.entries.c.seq)
            .limit(chunk)
        )
        rows = conn.execute(q).all()
        if not rows:
            return
        yield from rows
        cur = int(rows[-1].seq) + 1


def checkpoint_rows(conn: Connection, upto: int | None = None) -> list[sa.Row[Any]]:
    q = sa.select(store.checkpoints).order_by(store.checkpoints.c.size)
    if upto is not None:
        q = q.where(store.checkpoints.c.size <= upto)
    return list(conn.execute(q).all())


def cosignature_lines(conn: Connection, size: int) -> list[str]:
    q = (
        sa.select(store.cosignatures.c.line)
        .where(store.cosignatures.c.size == size)
        .order_by(store.cosignatures.c.witness)
    )
    return [str(r[0]) for r in conn.execute(q)]
