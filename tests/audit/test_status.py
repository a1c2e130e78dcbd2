"""The cached verification status: fresh answers cached, refreshes rate-limited, a slow
verification never holds a caller longer than ``wait_s``, failures are reported."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from audit import AuditLog
from audit.status import VerifyStatus
from tests.audit.conftest import LogFactory, entry


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_answers_are_cached_and_refreshes_rate_limited(
    sqlite_url: str, make_log: LogFactory
) -> None:
    log = make_log(sqlite_url)
    log.append(entry(0))
    clock = Clock()
    status = VerifyStatus(log, max_age_s=300, min_interval_s=30, monotonic=clock)
    first = status.get()
    assert first.state == "verified" and first.report is not None and first.report.size == 1
    log.append(entry(1))
    clock.t += 10
    assert status.get().report is first.report  # fresh: cached
    assert status.get(refresh=True).report is first.report  # refreshed too recently
    clock.t += 25
    again = status.get(refresh=True)
    assert again.report is not None and again.report.size == 2
    clock.t += 200
    assert status.get().report is again.report
    clock.t += 101
    log.append(entry(2))
    latest = status.get()
    assert latest.report is not None and latest.report.size == 3


class SlowLog(AuditLog):
    """A real log whose verification waits for the test to let it finish."""

    gate: threading.Event

    def verify(self, **kwargs: Any) -> Any:
        self.gate.wait(30)
        return super().verify(**kwargs)


def test_a_slow_verification_does_not_hold_the_caller(
    sqlite_url: str, make_log: LogFactory
) -> None:
    base = make_log(sqlite_url)
    base.append(entry(0))
    slow = SlowLog(base.engine, signer=base.signer)
    slow.gate = threading.Event()
    status = VerifyStatus(slow, wait_s=0.0)
    pending = status.get()
    assert pending.state == "running" and pending.report is None and pending.running
    slow.gate.set()
    status._thread.join(30)  # type: ignore[union-attr]
    done = status.get()
    assert done.state == "verified" and not done.running
    slow.close()


def test_an_unreadable_store_is_reported_not_raised(tmp_path: Path, make_log: LogFactory) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.db'}")
    log.engine.dispose()
    (tmp_path / "a.db").unlink()
    (tmp_path / "a.db").mkdir()
    snap = VerifyStatus(log).get()
    assert snap.state == "error" and snap.error and snap.error.startswith("audit_unavailable")
    assert snap.to_json()["ok"] is None
