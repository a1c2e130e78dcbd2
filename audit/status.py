"""The log's verification status for dashboards and the auditor API, bounded in cost.

A full verification reads every entry, so running one per HTTP request would let
any caller load the database at will, and on a large log one request would wait
minutes. ``VerifyStatus`` keeps the last report with the time it was made and
answers from it while it is fresh. When it is stale (or a refresh is asked for
and the last run is older than ``min_interval_s``) one verification starts in a
background thread; the caller waits for it at most ``wait_s`` and otherwise gets
the previous answer marked ``running``. At most one verification runs at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from audit.entry import format_ts
from audit.errors import AuditError
from audit.log import AuditLog
from audit.verify import VerifyReport

__all__ = ["StatusSnapshot", "VerifyStatus"]

log = logging.getLogger("audit.status")


@dataclass(frozen=True)
class StatusSnapshot:
    report: VerifyReport | None
    checked_at: str | None
    took_ms: float
    age_s: float | None
    running: bool
    error: str | None = None

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
        done = self._monotonic()
        with self._lock:
            if report is not None:
                self._report = report
            self._error = error
            self._at = format_ts(self._now())
            self._made = done
            self._took = (done - started) * 1000
            self._done.set()
