"""Verify the log in the database: every entry, chain link, tree node, checkpoint and head.

Streams entries in keyset pages inside one read transaction (a consistent snapshot
on PostgreSQL's REPEATABLE READ; SQLite readers see one WAL snapshot per
transaction), so a verification running beside live appenders sees one prefix.
A checkpoint row is read from its signed note; columns that disagree with the
note are damage, since the log serves proofs by them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import reads, store
from audit.checkpoint import parse_checkpoint
from audit.errors import AuditError, AuditUnavailable
from audit.note import NoteVerifier, parse_note
from audit.verify import ChainVerifier, VerifyReport

__all__ = ["verify_database"]

_CHUNK = 2000


def verify_database(
    engine: Engine,
    *,
    log_key: NoteVerifier | None,
    witness_keys: Sequence[NoteVerifier] = (),
    extra_checkpoints: Iterable[str] = (),
    signer_states: Iterable[str] = (),
    witness_quorum: int = 0,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify the stored log; ``signer_states`` are the log key's own records of the
    last checkpoint it signed (``<key>.signed``), which the store cannot change."""
    try:
        conn_ctx = engine.connect()
        if engine.dialect.name == "postgresql":
            conn_ctx = conn_ctx.execution_options(isolation_level="REPEATABLE READ")
        with conn_ctx as conn:
            head_row = conn.execute(sa.select(store.head).where(store.head.c.id == 1)).first()
            rows = reads.checkpoint_rows(conn)
            notes = [
                str(r.note) + "".join(reads.cosignature_lines(conn, int(r.size))) for r in rows
            ]
            v = ChainVerifier(
                checkpoints=[*notes, *extra_checkpoints],
                signer_states=signer_states,
                log_key=log_key,
                witness_keys=witness_keys,
                track_nodes=True,
                progress=progress,
            )
            for r in rows:
                _check_row(v, r)
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
                    head_size=int(head_row.size),
                    head_chain=reads.as_bytes(head_row.chain_hash),
                    head_frontier=reads.as_bytes(head_row.frontier),
                )
            report.warn_unsigned()
            report.check_witnesses(witness_keys, witness_quorum)
            return report
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"cannot read the audit store: {exc.__class__.__name__}") from exc


def _check_nodes(conn: sa.Connection, v: ChainVerifier) -> None:
    if v.new_nodes:
        wanted = [(level, idx) for level, idx, _ in v.new_nodes]
        v.verify_nodes(reads.fetch_nodes(conn, wanted))


def _check_row(v: ChainVerifier, row: Any) -> None:
    """A checkpoint row whose ``size`` or ``root`` columns are not its note's: the
    log picks the checkpoint a proof is served against by those columns."""
    try:
        cp = parse_checkpoint(parse_note(str(row.note)).text)
    except AuditError:
        return  # the verifier names a note that does not parse
    root = reads.as_bytes(row.root)
    if row.size != cp.size or not hmac.compare_digest(root, cp.root):
        v.fail(
            "checkpoint_invalid",
            None,
            f"the checkpoint row for size {row.size} holds size/root columns that are not "
            f"its signed note's (size {cp.size})",
        )
