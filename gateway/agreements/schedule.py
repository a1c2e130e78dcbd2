"""Which version of an agreement is in force at a given time.

A new version whose ``valid_from`` is still ahead does not cut off the version
in force: both are stored ``active``, the older one decides every exchange
until the newer one's window opens, and the newer one then takes over. These
functions answer from the stored rows and the time alone, so every node agrees
without having recorded anything; ``AgreementService.take_over_due`` then
records the takeover once (the older version's ``superseded`` event and audit
entry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from gateway.agreements.models import Agreement
from gateway.agreements.terms import AgreementTerms

__all__ = ["in_force", "next_takeover", "takeovers_due"]


def _starts(row: Agreement) -> datetime:
    return AgreementTerms(row.terms).valid_from


def _waiting(row: Agreement, older: Iterable[Agreement], now: datetime) -> bool:
    """Active but not yet started while an older version of it is still active."""
    return (
        row.status == "active"
        and now < _starts(row)
        and any(o.status == "active" and o.version < row.version for o in older)
    )


def in_force(versions: Sequence[Agreement], now: datetime) -> Agreement | None:
    """The version an exchange naming no version uses: the newest stored one, except
    that a version waiting for its window to open leaves the older active version
    in force. ``versions`` are one agreement's non-draft versions, any order."""
    ordered = sorted(versions, key=lambda r: r.version, reverse=True)
    for row in ordered:
        if not _waiting(row, ordered, now):
            return row
    return None


def takeovers_due(active: Iterable[Agreement], now: datetime) -> list[tuple[int, int]]:
    """``(pk, by_version)`` for every active version that a newer active version of
    the same agreement has taken over from by ``now`` (its window has opened)."""
    by_id: dict[str, list[Agreement]] = {}
    for row in active:
        if row.status == "active":
            by_id.setdefault(row.agreement_id, []).append(row)
    due: list[tuple[int, int]] = []
    for rows in by_id.values():
        started = [r.version for r in rows if _starts(r) <= now]
        if not started:
            continue
        newest = max(started)
        due.extend((r.pk, newest) for r in rows if r.version < newest and r.pk is not None)
    return due


def next_takeover(active: Iterable[Agreement], now: datetime) -> datetime | None:
    """When the next waiting version takes over (None: none is waiting)."""
    rows = [r for r in active if r.status == "active"]
    times = [_starts(r) for r in rows if _waiting(r, rows, now)]
    return min(times, default=None)
