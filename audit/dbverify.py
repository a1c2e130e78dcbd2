"""Verify the log in the database: every entry, chain link, tree node, checkpoint and head.

Streams entries in keyset pages inside one read transaction (a consistent snapshot
on PostgreSQL's REPEATABLE READ; SQLite readers see one WAL snapshot per
transaction), so a verification running beside live appenders sees one prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import reads, store
from audit.errors import AuditUnavailable
from audit.note import NoteVerifier
from audit.verify import ChainVerifier, VerifyReport

__all__ = ["verify_database"]

_CHUNK = 2000


def verify_database(
    engine: Engine,
    *,
    log_key: NoteVerifier | None,
    witness_keys: Sequence[NoteVerifier] = (),
    extra_checkpoints: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    try:
        conn_ctx = engine.connect()
        if engine.dialect.name == "postgresql":
            conn_ctx = conn_ctx.execution_options(isolation_level="REPEATABLE READ")
        with conn_ctx as conn:
            head_row = conn.execute(sa.select(store.head).where(store.head.c.id == 1)).first()
            notes = [
                str(r.note) + "".join(reads.cosignature_lines(conn, int(r.size)))
                for r in reads.checkpoint_rows(conn)
            ]
            v = ChainVerifier(
                checkpoints=[*notes, *extra_checkpoints],
                log_key=log_key,
                witness_keys=witness_keys,
                track_nodes=True,
                progress=progress,
            )
            last = conn.execute(sa.select(sa.func.max(store.entries.c.seq))).scalar()
            end = (int(last) + 1) if last is not None else 0
            for row in reads.iter_entries(conn, 0, end, chunk=_CHUNK):
                if not v.feed(
                    reads.as_bytes(row.data),
                    stored_seq=int(row.seq),
                    stored_leaf=reads.as_bytes(row.leaf_hash),
                    stored_chain=reads.as_bytes(row.chain_hash),
                ):
                    break
                if len(v.new_nodes) >= _CHUNK:
                    _check_nodes(conn, v)
            if v.damage is None:
                _check_nodes(conn, v)
            if head_row is None:
                v.warnings.append("no chain head row")
                report = v.finish()
            else:
                report = v.finish(
                    head_size=int(head_row.size), head_chain=reads.as_bytes(head_row.chain_hash)
                )
            report.warn_unsigned()
            return report
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"cannot read the audit store: {exc.__class__.__name__}") from exc


def _check_nodes(conn: sa.Connection, v: ChainVerifier) -> None:
    if v.new_nodes:
        wanted = [(level, idx) for level, idx, _ in v.new_nodes]
        v.verify_nodes(reads.fetch_nodes(conn, wanted))
