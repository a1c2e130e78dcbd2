"""Each node's own watch on the log between status checks, on a thread of its own.

Without it damage is found only when someone asks (``GET /v1/audit/status``): a
row an operator rewrote in the database would go unnoticed while every node kept
chaining entries and handing out receipts onto it. ``LogWatch`` does two things,
never on an event loop:

- every ``verify_interval_s`` it verifies what was appended since its last pass
  (``dbverify.verify_since``: the entries, their tree nodes and the checkpoints
  among them, and the head against them; the first pass starts at the newest
  checkpoint), so a pass costs what was appended in the meantime, not the log;
  damage is recorded exactly as a status check records it
  (``audit.status.record_damage``: this process stops, and the marker stops the
  others);
- it reads the damage marker (``poll_damage``) whenever nobody in the process has
  for ``poll_interval_s``, so a node that serves no exchanges stops appending too
  when another node found damage.

It only ever stops the log: clearing stays with a full verification that passes.
A change to an entry older than the last pass is left to that full verification
(``accord audit verify``, the status check), which rereads everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from audit.dbverify import Verified, verify_since
from audit.errors import AuditError
from audit.health import health_of
from audit.report import VerifyReport
from audit.status import poll_damage, record_damage

if TYPE_CHECKING:
    from audit.log import AuditLog

__all__ = ["LogWatch"]

log = logging.getLogger("audit.watch")


class _Stopping(Exception):
    """Raised from a pass's progress callback to end it when the watch stops."""


class LogWatch:
    """Verifies the log's new entries every ``verify_interval_s`` (0: never) and
    reads the damage marker every ``poll_interval_s`` (0: never), until stopped."""

    def __init__(
        self,
        audit_log: AuditLog,
        *,
        verify_interval_s: float = 60.0,
        poll_interval_s: float = 2.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = audit_log
        self.verify_interval_s = verify_interval_s
        self.poll_interval_s = poll_interval_s
        self._now = now
        self._since: Verified | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def verified_size(self) -> int | None:
        """How many entries the passes so far have verified (None: none has yet)."""
        since = self._since
        return None if since is None else since.size

    def start(self) -> None:
        """Start watching on a daemon thread; the first pass runs at once."""
        if self._thread is not None or (self.verify_interval_s <= 0 and self.poll_interval_s <= 0):
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._watch, name="audit-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching: a pass under way ends at its next thousand entries."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout)

    def verify_once(self) -> VerifyReport | None:
        """Verify what was appended since the last pass; on damage stop the log here
        and leave the marker for the other nodes. None when the log is already
        stopped for damage (nothing is appended meanwhile; once it is cleared the
        next pass starts afresh from the newest checkpoint, the log having been
        repaired)."""
        engine = self.log.engine
        if health_of(engine).damage is not None:
            self._since = None
            return None
        report, reached = verify_since(
            engine,
            self._since,
            log_key=self.log.log_key,
            witness_keys=self.log.witnesses,
            signer_states=self.log.signed_state.notes(),
            progress=self._progress,
        )
        if report.ok:
            self._since = reached
            return report
        self._since = None
        try:
            record_damage(engine, report.damage, self.log.node, self._now())
        except AuditError as exc:  # this process has stopped; the others learn later
            log.error("audit damage marker not written: %s", exc.detail)
        return report

    def _progress(self, _done: int) -> None:
        if self._stopping.is_set():
            raise _Stopping

    def _watch(self) -> None:
        verify_at = time.monotonic()  # the first pass at once
        while not self._stopping.is_set():
            now = time.monotonic()
            if self.verify_interval_s > 0 and now >= verify_at:
                self._pass("verification", self.verify_once)
                verify_at = time.monotonic() + self.verify_interval_s
            # Not ``poll_due``: taking its turns would starve readiness's write probe.
            since_poll = time.monotonic() - health_of(self.log.engine).polled_at
            if self.poll_interval_s > 0 and since_poll >= self.poll_interval_s:
                self._pass("damage marker read", lambda: poll_damage(self.log.engine))
            waits = [self.poll_interval_s] if self.poll_interval_s > 0 else []
            if self.verify_interval_s > 0:
                waits.append(verify_at - time.monotonic())
            self._stopping.wait(max(0.01, min(waits)))

    def _pass(self, what: str, run: Callable[[], object]) -> None:
        """One pass; a failure is logged and the next one comes at its time (the
        thread must go on watching)."""
        try:
            run()
        except _Stopping:
            return
        except AuditError as exc:
            log.warning("audit watch: %s failed: %s: %s", what, exc.code, exc.detail)
        except Exception:
            log.exception("audit watch: %s failed", what)
