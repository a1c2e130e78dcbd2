"""Verify the log in the database: every entry, chain link, tree node, checkpoint and head.

Streams entries in keyset pages inside one read transaction (a consistent snapshot
on PostgreSQL's REPEATABLE READ; SQLite readers see one WAL snapshot per
transaction), so a verification running beside live appenders sees one prefix.
A checkpoint row is read from its signed note; columns that disagree with the
note are damage, since the log serves proofs by them.

``verify_since`` is the same check on only what was appended since an earlier
one (``Verified``), for a node's background watch (``audit.watch``).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import reads, store
from audit.checkpoint import parse_checkpoint
from audit.entry import ZERO_CHAIN
from audit.errors import AuditError, AuditUnavailable
from audit.merkle import CompactRange, range_nodes
from audit.note import NoteVerifier, parse_note
from audit.report import VerifyReport
from audit.verify import ChainVerifier

__all__ = ["Verified", "verify_database", "verify_since"]

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
    with _snapshot(engine) as conn:
        head_row = conn.execute(sa.select(store.head).where(store.head.c.id == 1)).first()
        rows = reads.checkpoint_rows(conn)
        v = ChainVerifier(
            checkpoints=[*_cosigned_notes(conn, rows), *extra_checkpoints],
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
        _feed(conn, v, end)
        if head_row is None:
            v.warnings.append("no chain head row")
            report = v.finish()
        else:
            report = _finish(v, head_row)
        report.warn_unsigned()
        report.check_witnesses(witness_keys, witness_quorum)
        return report


@dataclass(frozen=True)
class Verified:
    """Where a verification reached: ``size`` entries, the chain hash after the last
    one and the Merkle frontier of the tree of ``size`` (``CompactRange`` bytes)."""

    size: int
    chain: bytes
    frontier: bytes


def verify_since(
    engine: Engine,
    since: Verified | None,
    *,
    log_key: NoteVerifier | None,
    witness_keys: Sequence[NoteVerifier] = (),
    signer_states: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
) -> tuple[VerifyReport, Verified]:
    """Verify the entries appended after ``since``, and where that reached.

    The entries from ``since`` to the head are checked as ``verify_database`` checks
    them (bytes, leaf and chain hashes, tree nodes, every checkpoint in the range
    against the recomputed root), and the head against them. Without ``since`` the
    check starts at the newest checkpoint: the frontier rebuilt from its stored
    nodes must give the root its signed note gives (else, or with no checkpoint,
    from the first entry). It costs what was appended since, not the log.

    An entry changed *before* ``since`` is not seen here (only a full verification
    rereads them), nor rows beyond the head: only the head, the entries up to it and
    the checkpoints within it are read, so appends committed meanwhile by other
    writers are left for the next call, never mistaken for damage.
    """
    with _snapshot(engine) as conn:
        head_row = conn.execute(sa.select(store.head).where(store.head.c.id == 1)).first()
        if head_row is None:
            raise AuditUnavailable("the audit log has no chain head: run create_schema()")
        end = int(head_row.size)
        start = since if since is not None else _anchor(conn, end)
        rows = conn.execute(
            sa.select(store.checkpoints)
            .where(store.checkpoints.c.size >= start.size, store.checkpoints.c.size <= end)
            .order_by(store.checkpoints.c.size)
        ).all()
        v = ChainVerifier(
            start=start.size,
            prev_chain=start.chain,
            frontier=CompactRange.from_bytes(start.size, start.frontier),
            checkpoints=_cosigned_notes(conn, rows),
            signer_states=signer_states,
            log_key=log_key,
            witness_keys=witness_keys,
            track_nodes=True,
            progress=progress,
        )
        for r in rows:
            _check_row(v, r)
        _feed(conn, v, end)
        report = _finish(v, head_row)
        return report, Verified(v.next, v.chain, v.cr.to_bytes())


def _cosigned_notes(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> list[str]:
    """Each checkpoint row's signed note with the witnesses' cosignatures appended."""
    return [str(r.note) + "".join(reads.cosignature_lines(conn, int(r.size))) for r in rows]


def _anchor(conn: sa.Connection, end: int) -> Verified:
    """The newest checkpoint within the head, as a starting point: its frontier from
    the stored nodes and the chain hash of its last entry. The first entry when
    there is none, or when they cannot be read (a full check then names the damage)."""
    start = Verified(0, ZERO_CHAIN, b"")
    size = conn.execute(
        sa.select(sa.func.max(store.checkpoints.c.size)).where(store.checkpoints.c.size <= end)
    ).scalar()
    if not size:
        return start
    size = int(size)
    wanted = range_nodes(0, size)
    got = reads.fetch_nodes(conn, wanted)
    chain = conn.execute(
        sa.select(store.entries.c.chain_hash).where(store.entries.c.seq == size - 1)
    ).scalar()
    if chain is None or len(got) != len(wanted):
        return start
    cr = CompactRange()
    try:
        for level, idx in wanted:
            cr.push(got[(level, idx)], level)
    except AuditError:
        return start
    return Verified(size, reads.as_bytes(chain), cr.to_bytes())


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[sa.Connection]:
    """One read transaction (REPEATABLE READ on PostgreSQL); store errors as
    ``AuditUnavailable``."""
    try:
        conn_ctx = engine.connect()
        if engine.dialect.name == "postgresql":
            conn_ctx = conn_ctx.execution_options(isolation_level="REPEATABLE READ")
        with conn_ctx as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"cannot read the audit store: {exc.__class__.__name__}") from exc


def _feed(conn: sa.Connection, v: ChainVerifier, end: int) -> None:
    """Every stored entry from ``v.next`` up to ``end``, and the tree nodes they make."""
    for row in reads.iter_entries(conn, v.next, end, chunk=_CHUNK):
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


def _finish(v: ChainVerifier, head_row: Any) -> VerifyReport:
    return v.finish(
        head_size=int(head_row.size),
        head_chain=reads.as_bytes(head_row.chain_hash),
        head_frontier=reads.as_bytes(head_row.frontier),
    )


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
