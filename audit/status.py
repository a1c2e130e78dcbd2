"""The log's verification status for dashboards and the auditor API, bounded in cost.

A full verification reads every entry, so running one per HTTP request would let
any caller load the database at will, and on a large log one request would wait
minutes. ``VerifyStatus`` keeps the last report with the time it was made and
answers from it while it is fresh. When it is stale (or a refresh is asked for
and the last run is older than ``min_interval_s``) one verification starts in a
background thread; the caller waits for it at most ``wait_s`` and otherwise gets
the previous answer marked ``running``. At most one verification runs at a time.

A verification that finds damage also stops the log (``LogHealth.damage``: no
entry is appended, and the gateway releases nothing) and leaves a marker row in
``audit_damage``, so every process and node on the same database stops too: each
reads the marker at startup, on its readiness probe and every few seconds from
the exchange path (``poll_damage``), never by verifying per request. Restarting
clears nothing: the marker stays until a full verification of the repaired log
passes, which removes it (``GET /v1/audit/status?refresh=true``; docs/audit.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import store
from audit.entry import format_ts
from audit.errors import AuditError, AuditUnavailable
from audit.health import health_of
from audit.report import Damage, VerifyReport

if TYPE_CHECKING:
    from audit.log import AuditLog

__all__ = [
    "DAMAGED_CODE",
    "StatusSnapshot",
    "VerifyStatus",
    "clear_damage",
    "damaged_error",
    "poll_damage",
    "record_damage",
]

#: The code of every refusal while the log is known to be damaged.
DAMAGED_CODE = "audit_log_damaged"

damage_marker = store.damage_marker

log = logging.getLogger("audit.status")


@dataclass(frozen=True)
class StatusSnapshot:
    report: VerifyReport | None
    checked_at: str | None
    took_ms: float
    age_s: float | None
    running: bool
    error: str | None = None
    #: the damage every node refuses on (this node's, or the marker another left)
    stopped: str | None = None

    @property
    def state(self) -> str:
        if self.report is None:
            return "error" if self.error and not self.running else "running"
        return "verified" if self.report.ok else "damaged"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "ok": None if self.report is None else self.report.ok,
            "size": None if self.report is None else self.report.size,
            "checked_at": self.checked_at,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "took_ms": round(self.took_ms, 1),
            "running": self.running,
            "error": self.error,
            "appending": "stopped" if self.stopped else "ok",
            "stopped_for": self.stopped,
            "report": None if self.report is None else self.report.to_json(),
        }


class VerifyStatus:
    """The cached result of ``AuditLog.verify``, refreshed in the background at a bounded rate."""

    def __init__(
        self,
        log: AuditLog,
        *,
        max_age_s: float = 300.0,
        min_interval_s: float = 30.0,
        wait_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log
        self.max_age_s = max_age_s
        self.min_interval_s = min_interval_s
        self.wait_s = wait_s
        self._monotonic = monotonic
        self._now = now
        self._lock = threading.Lock()
        self._report: VerifyReport | None = None
        self._error: str | None = None
        self._at: str | None = None
        self._made: float | None = None
        self._took = 0.0
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def get(self, *, refresh: bool = False) -> StatusSnapshot:
        """The last answer if fresh enough; else start one and wait up to ``wait_s`` for it."""
        with self._lock:
            age = None if self._made is None else self._monotonic() - self._made
            stale = age is None or age >= (self.min_interval_s if refresh else self.max_age_s)
            running = self._thread is not None and self._thread.is_alive()
            if stale and not running:
                self._done = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, name="audit-verify-status", daemon=True
                )
                self._thread.start()
                running = True
            done = self._done
        if running:
            done.wait(self.wait_s)
        return self.snapshot()

    def snapshot(self) -> StatusSnapshot:
        damage = health_of(self.log.engine).damage
        with self._lock:
            age = None if self._made is None else self._monotonic() - self._made
            running = self._thread is not None and self._thread.is_alive()
            return StatusSnapshot(
                self._report,
                self._at,
                self._took,
                age,
                running and not self._done.is_set(),
                self._error,
                None if damage is None else damage.detail,
            )

    def _run(self) -> None:
        started = self._monotonic()
        report: VerifyReport | None = None
        error: str | None = None
        try:
            report = self.log.verify()
        except AuditError as exc:
            error = f"{exc.code}: {exc.detail}"
        except Exception as exc:  # a status thread must report, not die silently
            log.exception("verification for the status endpoint failed")
            error = f"unexpected {exc.__class__.__name__}"
        if report is not None:
            self._stop_or_resume(report)
        done = self._monotonic()
        with self._lock:
            if report is not None:
                self._report = report
            self._error = error
            self._at = format_ts(self._now())
            self._made = done
            self._took = (done - started) * 1000
            self._done.set()

    def _stop_or_resume(self, report: VerifyReport) -> None:
        """Damage stops the log everywhere; a whole log clears it everywhere."""
        try:
            if report.ok:
                clear_damage(self.log.engine)
            else:
                record_damage(self.log.engine, report.damage, self.log.node, self._now())
        except AuditError as exc:  # this process has stopped; the others learn later
            log.error("audit damage marker not updated: %s", exc.detail)


def damaged_error(kind: str, seq: int | None, detail: str) -> AuditUnavailable:
    """The refusal every append and exchange meets while the log is damaged."""
    where = "" if seq is None else f" at entry {seq}"
    return AuditUnavailable(
        f"the audit log is damaged ({kind}{where}: {detail}); nothing is released or "
        "appended until a verification of the repaired log passes",
        code=DAMAGED_CODE,
    )


_ensured: set[str] = set()


def _ensure_marker(engine: Engine) -> None:
    """Create ``audit_damage`` in a database made before it existed (once per process
    and database); a role that may not create it fails here, closed."""
    key = engine.url.render_as_string(hide_password=True)
    if key in _ensured:
        return
    try:
        with store.write_lock(engine), engine.begin() as conn:
            damage_marker.create(conn, checkfirst=True)
    except SQLAlchemyError:
        # Two nodes creating it at once: one wins, the other finds it made.
        if not sa.inspect(engine).has_table(damage_marker.name):
            raise
    _ensured.add(key)


def record_damage(engine: Engine, damage: Damage | None, node: str, now: datetime) -> None:
    """Stop this process's appends and leave the marker for every other node.

    The stop comes first and stays even if the marker cannot be written."""
    kind = damage.kind if damage is not None else "unknown"
    seq = damage.seq if damage is not None else None
    detail = damage.detail if damage is not None else "verification failed"
    health_of(engine).stop(damaged_error(kind, seq, detail[:500]), local=True)
    log.critical("audit log damaged (%s at %s): appends and releases stop", kind, seq)
    try:
        _ensure_marker(engine)
        with store.write_lock(engine), engine.begin() as conn:
            if conn.execute(sa.select(damage_marker.c.id)).first() is None:
                conn.execute(
                    damage_marker.insert().values(
                        id=1,
                        kind=kind[:64],
                        seq=seq,
                        detail=detail[:2000],
                        node=node[:200],
                        detected_at=format_ts(now),
                    )
                )
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"cannot store the damage marker: {type(exc).__name__}") from exc


def clear_damage(engine: Engine) -> None:
    """A full verification passed: remove the marker, and resume appends here."""
    try:
        _ensure_marker(engine)
        with store.write_lock(engine), engine.begin() as conn:
            gone = conn.execute(damage_marker.delete()).rowcount
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"cannot clear the damage marker: {type(exc).__name__}") from exc
    health = health_of(engine)
    if gone or health.damage is not None:
        log.warning("audit log verified whole again: the damage stop is cleared")
    health.resume(local=True)


def poll_damage(engine: Engine) -> None:
    """Read the marker (one row) and stop or resume this process to match it.

    Damage this process found itself stays until its own verification passes.
    Raises ``AuditUnavailable`` when the marker cannot be read."""
    health = health_of(engine)
    try:
        _ensure_marker(engine)
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(damage_marker.c.kind, damage_marker.c.seq, damage_marker.c.detail)
            ).first()
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"cannot read the damage marker: {type(exc).__name__}") from exc
    if row is None:
        health.resume(local=False)
    else:
        seq = None if row.seq is None else int(row.seq)
        health.stop(damaged_error(str(row.kind), seq, str(row.detail)[:500]), local=False)
    health.polled = True
    health.polled_at = time.monotonic()
