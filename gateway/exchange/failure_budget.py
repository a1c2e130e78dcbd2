"""How many authentication failures a gateway process records one entry each.

A request that fails authentication costs its sender nothing, but costs the audit
log an entry and the disk a sync. A flood of bad tokens would grow the log as fast
as the gateway can answer. So each process records up to ``per_second``
authentication failures a second as entries of their own (a token bucket, with a
burst of the same size). Failures beyond that are counted by problem code, and
once a second of flood one ``auth_failure`` entry records them. That entry has
``outcome`` ``folded`` and ``detail`` holding the count, the first and last time,
and ``code:count`` pairs.

Every failure is still in the log, and the sender's answer is the same 401
either way. Only the failures of a flood lose their one-entry-each rows. A
budget of 0 records every failure on its own.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

__all__ = ["FOLD_WINDOW_S", "FailureBudget"]

#: How long failures beyond the budget are counted before their entry is written.
FOLD_WINDOW_S = 1.0


class FailureBudget:
    """A token bucket of individual ``auth_failure`` entries, and the failures folded."""

    def __init__(self, per_second: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._tokens = float(per_second)
        self._at = clock()
        self._folded: Counter[str] = Counter()
        self._first: datetime | None = None
        self._last: datetime | None = None

    def take(self) -> bool:
        """Whether this failure gets an entry of its own (and spend that right)."""
        if self.per_second <= 0:
            return True
        now = self._clock()
        refill = (now - self._at) * self.per_second
        self._tokens, self._at = min(float(self.per_second), self._tokens + refill), now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def fold(self, code: str, at: datetime) -> bool:
        """Count a failure that gets no entry of its own; True for the first of a window
        (the caller then schedules ``drain`` after ``FOLD_WINDOW_S``)."""
        first = not self._folded
        if first:
            self._first = at
        self._last = at
        self._folded[code] += 1
        return first

    @property
    def folded(self) -> int:
        return sum(self._folded.values())

    def drain(self) -> dict[str, Any] | None:
        """The entry recording the failures folded since the last drain (None if none),
        counting them from zero again."""
        if not self._folded or self._first is None or self._last is None:
            return None
        codes = [f"{code}:{n}" for code, n in sorted(self._folded.items())]
        entry: dict[str, Any] = {
            "event": "auth_failure",
            "outcome": "folded",
            "actor": "anonymous",
            "status": 401,
            "detail": {
                "failures": sum(self._folded.values()),
                "first": _iso(self._first),
                "last": _iso(self._last),
                "codes": codes[:100],
            },
        }
        self._folded.clear()
        self._first = self._last = None
        return entry


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
