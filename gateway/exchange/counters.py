"""State every gateway node shares through the database: used jtis and quota counters.

Both are single statements that the database makes atomic, so any number of
nodes behind a load balancer agree: a jti is inserted once (the primary key
refuses the second), and a quota window is reserved with one upsert that
returns the new count.

The claim runs on every exchange, so it skips SQLAlchemy's statement machinery
(which cost more CPU than the database's own work): two SQL strings per dialect
on the pooled DBAPI connection, and on PostgreSQL one pipelined round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit.store import write_lock
from gateway.db import lazy_commit, raw_lazy_transaction
from gateway.errors import AuthError, ServiceUnavailableError
from gateway.exchange.models import ReplayedJti, UsageCounter

__all__ = ["QuotaReservation", "ReplayCache", "Usage", "release_quota"]

_JTI = ReplayedJti.__table__  # type: ignore[attr-defined]
_USAGE = UsageCounter.__table__  # type: ignore[attr-defined]


class ReplayCache:
    """Remembers each (issuer, jti) until the token could no longer be accepted."""

    def __init__(self, engine: Engine, *, purge_every: int = 1000) -> None:
        self.engine = engine
        self._sql = _ClaimSql(engine)
        self._purge_every = purge_every
        self._seen = 0

    def __call__(self, iss: str, jti: str, expires_at: datetime) -> None:
        """Record ``jti``; raise ``AuthError(token_replayed)`` if it was used before."""
        self.claim(iss, jti, expires_at, None, expires_at)

    def claim(
        self, iss: str, jti: str, until: datetime, agreement_id: str | None, now: datetime
    ) -> QuotaReservation | None:
        """Record the jti and reserve the quota in one transaction (one commit per exchange).

        Raises ``AuthError(token_replayed)`` when the jti was used before; then
        nothing is reserved.
        """
        usage = Usage(now)
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            with write_lock(self.engine), raw_lazy_transaction(self.engine) as cur:
                cur.execute(self._sql.jti, (iss, jti, self._sql.expires(until)))
                if agreement_id is None:
                    reservation = None
                else:
                    cur.execute(
                        self._sql.reserve, (agreement_id, usage.minute, agreement_id, usage.day)
                    )
                    counts = dict(cur.fetchall())
                    minute, day = int(counts[usage.minute]), int(counts[usage.day])
                    reservation = QuotaReservation(agreement_id, usage, minute, day)
        except dbapi.IntegrityError as exc:
            raise AuthError("this request token was already used", code="token_replayed") from exc
        except (dbapi.Error, SQLAlchemyError, OSError) as exc:  # OSError: the write-turn file
            raise ServiceUnavailableError(
                "the replay cache and quota counters are unavailable", code="store_unavailable"
            ) from exc
        self._seen += 1
        if self._seen % self._purge_every == 0:
            self.purge(until - timedelta(minutes=10))
        return reservation

    def purge(self, before: datetime) -> int:
        """Forget jtis whose tokens expired before ``before`` (they fail on time anyway)."""
        with write_lock(self.engine), self.engine.begin() as conn:
            return int(conn.execute(_JTI.delete().where(_JTI.c.expires_at < before)).rowcount)


class Usage:
    """Window keys for an instant: one per UTC minute and one per UTC day."""

    def __init__(self, now: datetime) -> None:
        self.minute = "m:" + now.strftime("%Y-%m-%dT%H:%M")
        self.day = "d:" + now.strftime("%Y-%m-%d")


class QuotaReservation:
    """Counts taken for one exchange; ``before_*`` are the exchanges made before it."""

    def __init__(self, agreement_id: str, usage: Usage, minute: int, day: int) -> None:
        self.agreement_id = agreement_id
        self.usage = usage
        self.before_minute = minute - 1
        self.before_day = day - 1


_RESERVE = (
    'INSERT INTO usage_counter (agreement_id, "window", count) VALUES ({p}, {p}, 1), ({p}, {p}, 1) '
    'ON CONFLICT (agreement_id, "window") '
    'DO UPDATE SET count = usage_counter.count + 1 RETURNING "window", count'
)
_INSERT_JTI = "INSERT INTO request_jti (iss, jti, expires_at) VALUES ({p}, {p}, {p})"
_MARKS = {"qmark": "?", "pyformat": "%s", "format": "%s"}


class _ClaimSql:
    """The claim's two statements in one dialect's SQL and parameter style.

    ``reserve`` takes both windows of one agreement in one upsert and returns
    ``(window, new count)`` rows; ``expires`` renders a time as the column stores it.
    """

    def __init__(self, engine: Engine) -> None:
        mark = _MARKS[engine.dialect.paramstyle]
        self.jti = _INSERT_JTI.format(p=mark)
        self.reserve = _RESERVE.format(p=mark)
        process = _JTI.c.expires_at.type.bind_processor(engine.dialect)
        self.expires: Callable[[datetime], Any] = process or (lambda value: value)


def _upsert(insert: Any) -> Any:
    """The counter upsert for one dialect, built once: ``:start`` for a new window, ``:delta``."""
    return (
        insert(_USAGE)
        .values(
            agreement_id=sa.bindparam("agreement_id"),
            window=sa.bindparam("window"),
            count=sa.bindparam("start"),
        )
        .on_conflict_do_update(
            index_elements=["agreement_id", "window"],
            set_={"count": _USAGE.c.count + sa.bindparam("delta")},
        )
        .returning(_USAGE.c.count)
    )


# Both dialects spell the upsert the same way; only the construct differs.
_UPSERTS = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}
_CLAIM_JTI = _JTI.insert()


def _bump(conn: sa.Connection, agreement_id: str, window: str, delta: int) -> int:
    """Add ``delta`` to one window's counter with a single upsert; returns the new count."""
    stmt = _UPSERTS.get(conn.dialect.name)
    if stmt is None:  # pragma: no cover - only the two supported stores
        raise ServiceUnavailableError(f"quotas are not supported on {conn.dialect.name}")
    params = {
        "agreement_id": agreement_id,
        "window": window,
        "start": max(delta, 0),
        "delta": delta,
    }
    return int(conn.execute(stmt, params).scalar_one())


def release_quota(engine: Engine, reservation: QuotaReservation) -> None:
    """Give a reservation back: the exchange was refused or failed, nothing was released."""
    try:
        with write_lock(engine), lazy_commit(engine) as conn:
            _bump(conn, reservation.agreement_id, reservation.usage.minute, -1)
            _bump(conn, reservation.agreement_id, reservation.usage.day, -1)
    except (SQLAlchemyError, OSError):
        pass  # a counter left one too high only errs on the side of refusing
