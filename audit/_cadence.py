"""When an ``AuditLog`` signs a checkpoint, what it will sign, and who hears of it.

Every ``checkpoint_every`` entries, or after ``checkpoint_interval_s`` seconds in
which the log grew, the log signs a checkpoint of its current tree; then, off
the writer's path, it asks the configured witnesses to cosign the latest one.
Nothing is signed once a failed disk sync has stopped the appender: the head
might not be on disk; nor a tree that does not extend what the log key signed
last (``SignerState``): the store is not trusted to say what was signed.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from audit import reads, store
from audit.checkpoint import (
    Checkpoint,
    Signed,
    SignerState,
    SignerStateMismatch,
    sign_checkpoint,
    verify_checkpoint,
)
from audit.errors import AuditError, AuditUnavailable
from audit.health import health_of
from audit.merkle import consistency_proof, consistency_ranges, range_nodes
from audit.note import NoteSigner, NoteVerifier
from audit.records import Head
from audit.report import Damage
from audit.status import damaged_error, record_damage
from audit.store import short_busy_wait

if TYPE_CHECKING:
    from audit.log import AuditLog

__all__ = ["CheckpointCadence"]

log = logging.getLogger("audit.cadence")

SIGNER_MISMATCH = "signer_state_mismatch"


class CheckpointCadence:
    """The log's own checkpoints (sizes and times), and its rounds of witnesses."""

    def __init__(self, owner: AuditLog) -> None:
        self.owner = owner
        self.last_size = -1  # the newest checkpoint's size; -1 until read from the store
        self.last_time = time.monotonic()
        self._signing: threading.Thread | None = None  # off-loop signer, while it runs
        self._sender: threading.Thread | None = None  # the witness sender, while it runs
        self._send_wanted = False
        self._send_lock = threading.Lock()

    def signed(self, size: int) -> None:
        """A checkpoint of ``size`` entries was stored."""
        self.last_size = max(self.last_size, size)
        self.last_time = time.monotonic()

    def refused(self, size: int) -> None:
        """Signing ``size`` was refused: try again only when the next one is due."""
        self.signed(size)

    def sign_extension(self, conn: sa.Connection, signer: NoteSigner) -> tuple[Head, str, bool]:
        """The head, and its note once it is shown to extend everything the key signed
        (this signer's state, and the newest stored checkpoint the key signed); and
        whether that note is stored already. Call it holding ``SignerState.turn``."""
        state = self.owner.signed_state
        known = state.baselines(signer)
        # Before the head: another node may checkpoint meanwhile (PostgreSQL takes no
        # write turn here), and a head read after its row is at least that size.
        stored = _newest_signed(conn, signer.verifier())
        h = reads.read_head(conn)
        nodes = reads.NodeReader(conn)

        def prove(old: int) -> list[bytes]:
            ranges = consistency_ranges(old, h.size)
            nodes(sorted({n for a, b in ranges if a < b for n in range_nodes(a, b)}))
            return consistency_proof(old, h.size, nodes)

        try:
            SignerState.verify_extends([*known, *stored], h.size, h.root, prove)
        except SignerStateMismatch as exc:
            state.incident = exc.detail
            self.refused(h.size)
            log.critical("signer_state_mismatch: refusing to sign: %s", exc.detail)
            # The store is not what the key signed: this process releases and appends
            # nothing more, from now (under the write turn: no batch slips past), and
            # ``leave_marker`` stops the other nodes once the turn is given back
            # (``audit.status`` clears both once a verification passes).
            health_of(self.owner.engine).stop(
                damaged_error(SIGNER_MISMATCH, None, exc.detail[:500]), local=True
            )
            raise
        if not known:
            log.warning(
                "signer_state_first_use: no record of what the log key signed; "
                "trusting the store's tree of %d entries once",
                h.size,
            )
        cp = Checkpoint(signer.name, h.size, h.root)
        same = [s for s in stored if s.checkpoint.size == h.size]
        note = same[0].note if same else sign_checkpoint(cp, signer)
        try:
            state.record(Signed(cp, note))
        except OSError as exc:
            raise AuditUnavailable(f"cannot record the signed checkpoint: {exc}") from exc
        return h, note, bool(same)

    def leave_marker(self, exc: SignerStateMismatch) -> None:
        """Leave the damage marker for a refusal to sign, so that every node on the
        database stops within its poll (``audit.status.poll_damage``), not only this
        one. If the marker cannot be written this process stays stopped all the same
        (fail closed), and says loudly that the others do not know."""
        damage = Damage(SIGNER_MISMATCH, None, exc.detail)
        try:
            record_damage(self.owner.engine, damage, self.owner.node, datetime.now(UTC))
        except AuditError as err:
            log.critical(
                "signer_state_mismatch: the damage marker was not written (%s): this "
                "process has stopped, other nodes keep appending until they find the damage",
                err.detail,
            )

    def due(self, size: int) -> bool:
        if self.owner.signer is None or self.owner.checkpoint_every <= 0:
            return False
        if self.last_size < 0:
            self.last_size = self._stored_size()
        return size - self.last_size >= self.owner.checkpoint_every

    def after_commit(self, size: int) -> None:
        """The writer thread committed up to ``size``: sign here if one is due."""
        if self.due(size):
            self.run()

    def after_loop_commit(self, size: int) -> None:
        """An event loop committed up to ``size``: a due checkpoint is signed and
        stored on its own thread, not the loop's."""
        if not self.due(size):
            return
        if self._signing is not None and self._signing.is_alive():
            return

        def sign() -> None:
            try:
                self.run()
            except Exception:
                log.exception("cadence checkpoint failed")

        self._signing = threading.Thread(target=sign, name="audit-checkpoint", daemon=True)
        self._signing.start()

    def on_idle(self) -> None:
        """The writer had nothing to do for a while: sign if the interval is over and
        the log grew since the last checkpoint."""
        if self.owner.signer is None or self.owner.checkpoint_interval_s <= 0:
            return
        if time.monotonic() - self.last_time < self.owner.checkpoint_interval_s:
            return
        self.last_time = time.monotonic()
        with self.owner.engine.connect() as conn:
            size = reads.read_head(conn).size
        if size > max(self.last_size, self._stored_size()):
            self.run()

    def run(self) -> None:
        """A cadence checkpoint, then (off the writer's path) a round of witnesses.
        Nothing once a failed sync stopped the writer: the head may not be on disk."""
        try:
            self.owner.verify_appending()
        except AuditError:
            return
        # In the background, holding the write turn: a writer outside the turn (a
        # `sqlite3` shell in a transaction) must not keep it for SQLite's 30 s busy
        # wait, or every exchange would wait behind it. Fail fast; the next one is
        # due again soon.
        with short_busy_wait():
            try:
                self.owner.checkpoint()
            except SignerStateMismatch:
                return  # logged and kept as the incident; retried when due again
        if not self.owner.witness_urls:
            return
        with self._send_lock:
            # A checkpoint signed while a round is out is sent by that sender's
            # next round: the latest checkpoint always reaches the witnesses.
            self._send_wanted = True
            if self._sender is not None:
                return
            self._sender = threading.Thread(target=self._send, name="audit-witness", daemon=True)
            self._sender.start()

    def _send(self) -> None:
        while True:
            with self._send_lock:
                if not self._send_wanted:
                    self._sender = None
                    return
                self._send_wanted = False
            try:
                with short_busy_wait():  # as for checkpoints: never hold the turn long
                    sent = self.owner.send_to_witnesses(self.owner.witness_urls)
                for url, result in sent.items():
                    log.info("witness %s: %s", url, result)
            except Exception:
                log.exception("sending the checkpoint to witnesses failed")

    def join(self, timeout: float) -> None:
        """Wait for a checkpoint being signed off the loop (closing the log)."""
        if self._signing is not None:
            self._signing.join(timeout)

    def _stored_size(self) -> int:
        with self.owner.engine.connect() as conn:
            got = conn.execute(sa.select(sa.func.max(store.checkpoints.c.size))).scalar()
        return int(got) if got is not None else 0


def _newest_signed(conn: sa.Connection, key: NoteVerifier) -> list[Signed]:
    """The newest stored checkpoint that ``key`` signed (any node's), read from its
    note, never its columns: the store cannot forge one, only delete it."""
    rows = conn.execute(
        sa.select(store.checkpoints.c.note).order_by(store.checkpoints.c.size.desc()).limit(8)
    )
    for (note,) in rows:
        try:
            return [Signed(verify_checkpoint(str(note), key), str(note))]
        except AuditError:
            continue  # not the key's (rotated, or junk): verify reports it
    return []
