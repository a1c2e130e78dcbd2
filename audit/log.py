"""``AuditLog``: the one object the gateway holds to write and read the audit log.

Writes go through the group committer (durable when ``append`` returns); from an
event loop through its ``LoopWriter`` (SQLite) or ``PgLoopWriter`` (PostgreSQL
with psycopg); reads, proofs and
checkpoints are plain queries on the same engine. Checkpoints are made every
``checkpoint_every`` entries or ``checkpoint_interval_s`` seconds when a signer
is configured (``audit._cadence``), by whichever process notices first; Ed25519
is deterministic, so two nodes checkpointing the same size write the same note.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from audit import proofs, reads, store
from audit._cadence import CheckpointCadence
from audit._loop_writers import LoopWriters, loop_capable
from audit.appender import append_in
from audit.checkpoint import (
    SignerState,
    SignerStateMismatch,
    parse_checkpoint,
    verify_cosignatures,
)
from audit.committer import GroupCommitter
from audit.entry import format_ts, verify_entry_fields
from audit.errors import AuditError, AuditUnavailable
from audit.note import NoteSigner, NoteVerifier, parse_note
from audit.records import Appended, ConsistencyProof, Head, InclusionProof, LogEntry
from audit.report import Damage, VerifyReport

__all__ = ["AuditLog"]

log = logging.getLogger("audit.log")


def _checked(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of entries whose fields are all known, to queue for a batch."""
    if not entries:
        raise AuditError("nothing to append", code="audit_entry_invalid")
    for e in entries:
        verify_entry_fields(e)
    return [dict(e) for e in entries]


class AuditLog:
    """Append-only, hash-chained, Merkle-checkpointed audit log on one database."""

    def __init__(
        self,
        engine: Engine,
        node: str = "gw-1",
        signer: NoteSigner | None = None,
        *,
        max_batch: int = 256,
        max_wait_ms: float = 2.0,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        witnesses: Sequence[NoteVerifier] = (),
        witness_urls: Sequence[str] = (),
        timeout_s: float = 30.0,
        loop_writes: bool | None = None,
        signer_state: Path | None = None,
    ) -> None:
        self.engine = engine
        # ``append_async`` commits on the caller's event loop: SQLite on the loop's
        # thread (``LoopWriter``), PostgreSQL over an async connection (``PgLoopWriter``).
        self.loop_writes = loop_capable(engine) if loop_writes is None else loop_writes
        self.node = node
        self.signer = signer
        self.witnesses = list(witnesses)
        self.witness_urls = list(witness_urls)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.timeout_s = timeout_s
        self._cp_lock = threading.Lock()
        #: What the log key signed last (``<key>.signed``, else memory only).
        self.signed_state = SignerState(signer_state)
        self._cadence = CheckpointCadence(self)
        self._committer: GroupCommitter | None = None
        self._committer_lock = threading.Lock()
        self._max_batch = max_batch
        self._max_wait_ms = max_wait_ms
        self._loop_writers = LoopWriters(
            engine,
            self._writer,
            lambda: self._committer,
            max_batch=max_batch,
            after_commit=self._cadence.after_loop_commit,
            timeout_s=timeout_s,
        )

    # -- schema and lifecycle -------------------------------------------------

    def create_schema(self) -> None:
        """Create the audit tables, triggers and head row (idempotent)."""
        store.create_schema(self.engine)

    def close(self) -> None:
        """Flush queued appends and stop the writer thread."""
        with self._committer_lock:
            if self._committer is not None:
                self._committer.close()
                self._committer = None
        self._cadence.join(self.timeout_s)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def log_key(self) -> NoteVerifier | None:
        return self.signer.verifier() if self.signer else None

    def _writer(self) -> GroupCommitter:
        with self._committer_lock:
            if self._committer is None:
                self._committer = GroupCommitter(
                    self.engine,
                    self.node,
                    max_batch=self._max_batch,
                    max_wait_ms=self._max_wait_ms,
                    after_commit=self._cadence.after_commit,
                    on_idle=self._cadence.on_idle,
                    idle_s=max(0.05, min(1.0, self.checkpoint_interval_s)),
                )
            return self._committer

    # -- appending ------------------------------------------------------------

    def append(self, entry: Mapping[str, Any]) -> Appended:
        """Append one entry; returns once it is committed. Raises ``AuditError``."""
        return self.append_many([entry])[0]

    def append_many(self, entries: Sequence[Mapping[str, Any]]) -> list[Appended]:
        """Append entries contiguously in one transaction."""
        fut = self._writer().submit(_checked(entries))
        try:
            return fut.result(timeout=self.timeout_s)
        except TimeoutError as exc:
            raise AuditUnavailable("the audit store did not answer in time") from exc

    def verify_appending(self) -> None:
        """Raise ``AuditUnavailable`` once a failed disk sync has stopped this log's writer."""
        committer = self._committer
        if committer is not None and committer.broken is not None:
            raise committer.broken

    def append_in(self, conn: sa.Connection, entry: Mapping[str, Any]) -> Appended:
        """Append inside the caller's transaction: the change and its entry commit together."""
        self.verify_appending()
        verify_entry_fields(entry)
        return append_in(conn, self.node, [dict(entry)])[0]

    async def append_async(self, entry: Mapping[str, Any]) -> Appended:
        """``append`` for asyncio callers: waits for the disk without blocking the loop.

        With ``loop_writes`` the entry is written on this loop, batched with the
        other appends of the same pass (``LoopWriter``)."""
        entries = _checked([entry])
        writer = self._loop_writers.current() if self.loop_writes else self._writer()
        fut = writer.submit(entries)
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task, unlike wait_for
                res = await (fut if isinstance(fut, asyncio.Future) else asyncio.wrap_future(fut))
        except TimeoutError as exc:
            raise AuditUnavailable("the audit store did not answer in time") from exc
        return res[0]

    async def aclose_loop(self) -> None:
        """Write what this loop queued and close its connection (PostgreSQL); call it
        on that loop before ``close``."""
        await self._loop_writers.aclose_current()

    # -- checkpoints ----------------------------------------------------------

    def head(self) -> Head:
        with self.engine.connect() as conn:
            return reads.read_head(conn)

    def checkpoint(self) -> str:
        """Sign and store a checkpoint of the current tree; returns the signed note.

        Raises ``SignerStateMismatch`` when the store's tree does not extend what the
        log key signed last (``SignerState``), having recorded the incident, stopped
        this process and left the damage marker that stops every other node."""
        if self.signer is None:
            raise AuditError("no log signing key is configured", code="audit_no_signer")
        with self._cp_lock, self.signed_state.turn():
            try:
                # The write turn first: on SQLite a read-then-write transaction that
                # another writer overtakes waits in the busy handler (in sleeps of up
                # to 100 ms) or fails, and this runs on the appender's thread.
                with store.write_lock(self.engine), self.engine.connect() as conn:
                    h, note, stored = self._cadence.sign_extension(conn, self.signer)
                    if not stored:
                        ts = format_ts(datetime.now(UTC))
                        try:
                            conn.execute(
                                store.checkpoints.insert().values(
                                    size=h.size, root=h.root, note=note, ts=ts
                                )
                            )
                            conn.commit()
                        except IntegrityError:  # another node stored this size first
                            conn.rollback()
            except SQLAlchemyError as exc:
                raise AuditUnavailable(
                    f"cannot store the checkpoint: {exc.__class__.__name__}"
                ) from exc
            except SignerStateMismatch as exc:
                self._cadence.leave_marker(exc)  # the write turn is given back by now
                raise
            self._cadence.signed(h.size)
            return note

    def latest_checkpoint(self) -> str | None:
        """The newest signed checkpoint with every recorded witness cosignature."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(store.checkpoints.c.size, store.checkpoints.c.note)
                .order_by(store.checkpoints.c.size.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            return str(row.note) + "".join(reads.cosignature_lines(conn, int(row.size)))

    def checkpoints(self) -> list[str]:
        """Every stored checkpoint (with cosignatures), oldest first."""
        with self.engine.connect() as conn:
            return [
                str(r.note) + "".join(reads.cosignature_lines(conn, int(r.size)))
                for r in reads.checkpoint_rows(conn)
            ]

    def record_cosignatures(self, note: str, lines: Iterable[str]) -> list[str]:
        """Keep the cosignature lines that verify with a configured witness key."""
        text = parse_note(note).text
        combined = note + "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        good = verify_cosignatures(combined, self.witnesses)
        size = parse_checkpoint(text).size
        with store.write_lock(self.engine), self.engine.begin() as conn:
            for cos in good:
                exists = conn.execute(
                    sa.select(store.cosignatures.c.size).where(
                        store.cosignatures.c.size == size,
                        store.cosignatures.c.witness == cos.witness,
                    )
                ).first()
                if exists is None:
                    conn.execute(
                        store.cosignatures.insert().values(
                            size=size, witness=cos.witness, timestamp=cos.timestamp, line=cos.line
                        )
                    )
        return [c.witness for c in good]

    def send_to_witnesses(self, urls: Sequence[str], timeout: float = 10.0) -> dict[str, str]:
        """Ask each witness (c2sp.org/tlog-witness) to cosign the latest checkpoint.

        Returns ``{url: "cosigned" | reason}`` and stores every valid cosignature.
        """
        from audit.witness_client import submit_checkpoint

        return submit_checkpoint(self, urls, timeout=timeout)

    # -- proofs ---------------------------------------------------------------

    def inclusion_proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        """Proof that entry ``seq`` is in the tree of ``tree_size`` leaves
        (``audit.proofs.inclusion_proof``)."""
        return proofs.inclusion_proof(self.engine, seq, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyProof:
        """Proof that the tree of ``new_size`` leaves extends the one of ``old_size``."""
        return proofs.consistency_proof(self.engine, old_size, new_size)

    # -- lookups --------------------------------------------------------------

    def entries(self, start: int, end: int) -> list[LogEntry]:
        """Entries with ``start <= seq < end`` (at most 10,000 per call)."""
        end = min(end, start + 10_000)
        with self.engine.connect() as conn:
            return [reads.to_entry(r) for r in reads.iter_entries(conn, max(0, start), end)]

    def entries_by_exchange(self, exchange_id: str) -> list[LogEntry]:
        q = (
            reads.entry_select()
            .where(store.entries.c.exchange_id == exchange_id)
            .order_by(store.entries.c.seq)
            .limit(1000)
        )
        with self.engine.connect() as conn:
            return [reads.to_entry(r) for r in conn.execute(q)]

    def entries_by_subject(
        self, pseudonym: str, limit: int = 50, offset: int = 0, before: int | None = None
    ) -> list[LogEntry]:
        """Entries about one data subject, newest first (for the citizen access log);
        ``seq < before``, a bound that does not move as entries are appended."""
        q = reads.entry_select().where(store.entries.c.subject == pseudonym)
        if before is not None:
            q = q.where(store.entries.c.seq < before)
        q = (
            q.order_by(store.entries.c.seq.desc())
            .limit(max(0, min(limit, 1000)))
            .offset(max(0, offset))
        )
        with self.engine.connect() as conn:
            return [reads.to_entry(r) for r in conn.execute(q)]

    # -- verification and export ---------------------------------------------

    def verify(
        self,
        *,
        log_key: NoteVerifier | None = None,
        witness_keys: Sequence[NoteVerifier] | None = None,
        extra_checkpoints: Iterable[str] = (),
        signer_states: Iterable[str] | None = None,
        witness_quorum: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Recompute the whole log from its bytes and compare with everything stored,
        and with what the log key signed last (``signer_states``: by default this
        log's own ``SignerState``). A refusal to sign seen by this process is
        damage (``signer_state_mismatch``) until it restarts."""
        from audit.dbverify import verify_database

        report = verify_database(
            self.engine,
            log_key=log_key or self.log_key,
            witness_keys=self.witnesses if witness_keys is None else witness_keys,
            extra_checkpoints=extra_checkpoints,
            signer_states=self.signed_state.notes() if signer_states is None else signer_states,
            witness_quorum=witness_quorum,
            progress=progress,
        )
        incident = self.signed_state.incident
        if incident is not None and report.damage is None:
            report.ok = False
            report.damage = Damage("signer_state_mismatch", None, f"signing refused: {incident}")
        return report

    def export(self, from_seq: int, to_seq: int, directory: str | Path) -> Path:
        """Write entries ``[from_seq, to_seq)`` and their evidence to ``directory``."""
        from audit.export import export_bundle

        return export_bundle(self, from_seq, to_seq, Path(directory))
