"""What this process knows of the health of each audit database it writes to.

One ``LogHealth`` per database (``health_of``), shared by every ``AuditLog``,
writer, check and write probe (``audit.probe``) of the process on it: the damage
that stops appends everywhere here, and how the last write went.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.engine import Engine

from audit.errors import AuditError

__all__ = ["LogHealth", "health_of"]


class LogHealth:
    """What this process knows of one audit database: damage found in it, and how
    the last write to it went.

    ``damage`` stops every append (``GroupCommitter.broken``, ``appender.append_in``):
    entries chained onto a log that fails verification would carry receipts and
    proofs that prove nothing, and after a truncation they would reuse sequence
    numbers a witness has already seen, burying the evidence. It is set and cleared
    by ``audit.status`` (from a verification, or from the marker another node left
    in the database), never by the writers. ``failure`` is the last append or write
    probe that failed, cleared by the next one that worked: readiness reads it.
    Reading either is an attribute read; the hot path does nothing more.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.damage: AuditError | None = None
        #: whether ``damage`` was found by this process (else learnt from the marker)
        self.damage_local = False
        self.failure: AuditError | None = None
        self._next_poll = 0.0
        self.polled = False
        #: ``time.monotonic()`` of the last read of the damage marker that worked
        self.polled_at = 0.0

    def stop(self, damage: AuditError, *, local: bool) -> None:
        with self._lock:
            if self.damage is None or local:
                self.damage, self.damage_local = damage, local or self.damage_local

    def resume(self, *, local: bool) -> None:
        """Clear the damage: ``local`` (this process verified the log whole) clears any,
        else only damage learnt from the marker."""
        with self._lock:
            if local or not self.damage_local:
                self.damage, self.damage_local = None, False

    def wrote(self) -> None:
        self.failure = None

    def failed(self, exc: AuditError) -> None:
        if exc is not self.damage:  # a refusal because of damage is not a store failure
            self.failure = exc

    def poll_due(self, interval_s: float) -> bool:
        """Whether the caller should read the damage marker now: always until one read
        has worked, then at most one caller per ``interval_s``."""
        now = time.monotonic()
        with self._lock:
            if self.polled and now < self._next_poll:
                return False
            self._next_poll = now + interval_s
            return True


_HEALTH: dict[str, LogHealth] = {}
_HEALTH_LOCK = threading.Lock()


def health_of(engine: Engine) -> LogHealth:
    """The one ``LogHealth`` of the database ``engine`` reaches, shared by every
    ``AuditLog``, writer and check of this process on it."""
    key = engine.url.render_as_string(hide_password=True)
    with _HEALTH_LOCK:
        health = _HEALTH.get(key)
        if health is None:
            health = _HEALTH[key] = LogHealth()
        return health
