"""The log's verification status for dashboards and the auditor API, bounded in cost.

A full verification reads every entry, so serving one per HTTP request would let
any caller load the database at will. ``VerifyStatus`` keeps the last report with
the time it was made, answers from it while it is fresh, and runs at most one
verification at a time (others wait for it and share the answer); an explicit
refresh is honoured only when the last run is older than ``min_interval_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from audit.entry import format_ts
from audit.log import AuditLog
from audit.verify import VerifyReport

__all__ = ["StatusSnapshot", "VerifyStatus"]


@dataclass(frozen=True)
class StatusSnapshot:
    report: VerifyReport
    checked_at: str
    took_ms: float
    age_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.report.ok,
            "size": self.report.size,
            "checked_at": self.checked_at,
            "age_s": round(self.age_s, 3),
            "took_ms": round(self.took_ms, 1),
            "report": self.report.to_json(),
        }


class VerifyStatus:
    """The cached result of ``AuditLog.verify``, refreshed at a bounded rate."""

    def __init__(
        self,
        log: AuditLog,
        *,
        max_age_s: float = 300.0,
        min_interval_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log
        self.max_age_s = max_age_s
        self.min_interval_s = min_interval_s
        self._monotonic = monotonic
        self._now = now
        self._lock = threading.Lock()
        self._last: tuple[VerifyReport, str, float, float] | None = None

    def get(self, *, refresh: bool = False) -> StatusSnapshot:
        """The last report if fresh enough, else a new one (one verification at a time)."""
        with self._lock:
            if self._last is not None:
                report, at, took, made = self._last
                age = self._monotonic() - made
                fresh = age < (self.min_interval_s if refresh else self.max_age_s)
                if fresh:
                    return StatusSnapshot(report, at, took, age)
            started = self._monotonic()
            report = self.log.verify()
            done = self._monotonic()
            self._last = (report, format_ts(self._now()), (done - started) * 1000, done)
            return StatusSnapshot(report, self._last[1], self._last[2], 0.0)
