"""State every gateway node shares through the database: used jtis and quota counters.

Both are single statements that the database makes atomic, so any number of
nodes behind a load balancer agree: a jti is inserted once (the primary key
refuses the second), and a quota window is reserved with one upsert that
returns the new count.

The claim runs on every exchange, so it skips SQLAlchemy's statement machinery
(which cost more CPU than the database's own work) and runs plain SQL on the
pooled DBAPI connection: on SQLite two statements in one lazy transaction, on
PostgreSQL one autocommitted statement (one round trip).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit.store import write_lock
from gateway.db import raw_lazy_transaction, single_statement_cursor
from gateway.errors import AuthError, ServiceUnavailableError
from gateway.exchange.models import ReplayedJti
from gateway.statecache import GENERATION

__all__ = [
    "PG_GIVE_BACK",
    "QuotaReservation",
    "ReplayCache",
    "Usage",
    "counters_unavailable",
    "release_quota",
    "replayed",
    "reservation_from",
]

_JTI = ReplayedJti.__table__  # type: ignore[attr-defined]


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
            with write_lock(self.engine), _transaction(self.engine) as cur:
                for sql, params in self.statements(iss, jti, until, agreement_id, usage):
                    cur.execute(sql, params)
                rows = cur.fetchall() if agreement_id is not None else []
        except dbapi.IntegrityError as exc:
            raise replayed() from exc
        except (dbapi.Error, SQLAlchemyError, OSError) as exc:  # OSError: the write-turn file
            raise counters_unavailable() from exc
        before = self.purge_due(until)
        if before is not None:
            self.purge(before)
        return reservation_from(agreement_id, usage, rows)

    def statements(
        self, iss: str, jti: str, until: datetime, agreement_id: str | None, usage: Usage
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The claim in this database's SQL; reserving returns ``(window, count)`` rows."""
        return self._sql.statements(iss, jti, until, agreement_id, usage)

    def awaited_claim(
        self, iss: str, jti: str, until: datetime, agreement_id: str | None, usage: Usage
    ) -> tuple[str, tuple[Any, ...]]:
        """PostgreSQL's claim as one statement (``pg_steps``) whose rows also end with
        the state generation its snapshot saw: ``(generation,)`` for a bare claim,
        ``(window, new count, generation)`` when it reserves."""
        spend = (iss, jti, self._sql.expires(until))
        if agreement_id is None:
            return _PG_CLAIM_JTI_SEEN, spend
        return _PG_CLAIM_AND_RESERVE_SEEN, (*spend, agreement_id, usage.minute, usage.day)

    @staticmethod
    def awaited_reserve(agreement_id: str, usage: Usage) -> tuple[str, tuple[Any, ...]]:
        """PostgreSQL: reserve the quota alone, ``(window, new count)`` rows (for an
        exchange whose jti a claim already spent)."""
        return _PG_RESERVE, (agreement_id, usage.minute, usage.day)

    def purge_due(self, until: datetime) -> datetime | None:
        """Count a claim; every ``purge_every`` claims, the time to forget jtis before."""
        self._seen += 1
        return until - timedelta(minutes=10) if self._seen % self._purge_every == 0 else None

    def purge(self, before: datetime) -> int:
        """Forget jtis whose tokens expired before ``before`` (they fail on time anyway)."""
        with write_lock(self.engine), self.engine.begin() as conn:
            return int(conn.execute(_JTI.delete().where(_JTI.c.expires_at < before)).rowcount)


def replayed() -> AuthError:
    return AuthError("this request token was already used", code="token_replayed")


def counters_unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "the replay cache and quota counters are unavailable", code="store_unavailable"
    )


def reservation_from(
    agreement_id: str | None, usage: Usage, rows: Sequence[Sequence[Any]]
) -> QuotaReservation | None:
    """The reservation a claim's ``(window, new count)`` rows make, if it reserved."""
    if agreement_id is None:
        return None
    counts: dict[str, int] = {str(w): int(c) for w, c in rows}
    return QuotaReservation(agreement_id, usage, counts[usage.minute], counts[usage.day])


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
    'INSERT INTO usage_counter (agreement_id, "window", count) VALUES (?, ?, 1), (?, ?, 1) '
    'ON CONFLICT (agreement_id, "window") '
    'DO UPDATE SET count = usage_counter.count + 1 RETURNING "window", count'
)
_INSERT_JTI = "INSERT INTO request_jti (iss, jti, expires_at) VALUES (?, ?, ?)"
# PostgreSQL: the whole claim is one statement, autocommitted, that commits without
# waiting for the WAL flush (``set_config(..., true)`` lasts for its own transaction).
# A spent jti fails the statement, so nothing is reserved.
_PG_CLAIM_JTI = (
    "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true)) "
    "INSERT INTO request_jti (iss, jti, expires_at) SELECT %s, %s, %s FROM lazy"
)
_PG_CLAIM_AND_RESERVE = (
    "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true)), "
    "spent AS (INSERT INTO request_jti (iss, jti, expires_at) "
    "SELECT %s, %s, %s FROM lazy RETURNING 1) "
    'INSERT INTO usage_counter (agreement_id, "window", count) '
    "SELECT %s, w.name, 1 FROM spent, (VALUES (%s), (%s)) AS w(name) "
    'ON CONFLICT (agreement_id, "window") '
    'DO UPDATE SET count = usage_counter.count + 1 RETURNING "window", count'
)

# The awaited claim (``pg_steps``) also returns the state generation its snapshot
# saw, so an exchange checked against cached rows learns in the same round trip
# whether they were current (``gateway.exchange.admission``).
_PG_CLAIM_JTI_SEEN = f"{_PG_CLAIM_JTI} RETURNING {GENERATION}"
_PG_CLAIM_AND_RESERVE_SEEN = f"{_PG_CLAIM_AND_RESERVE}, {GENERATION}"
_PG_RESERVE = (
    "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true)) "
    'INSERT INTO usage_counter (agreement_id, "window", count) '
    "SELECT %s, w.name, 1 FROM lazy, (VALUES (%s), (%s)) AS w(name) "
    'ON CONFLICT (agreement_id, "window") '
    'DO UPDATE SET count = usage_counter.count + 1 RETURNING "window", count'
)


class _ClaimSql:
    """The claim in one dialect's SQL: ``(statement, params)`` lists per claim.

    Reserving takes both windows of one agreement in one upsert that returns
    ``(window, new count)`` rows; ``expires`` renders a time as the column stores it.
    """

    def __init__(self, engine: Engine) -> None:
        self.postgres = engine.dialect.name == "postgresql"
        process = _JTI.c.expires_at.type.bind_processor(engine.dialect)
        self.expires: Callable[[datetime], Any] = process or (lambda value: value)

    def statements(
        self, iss: str, jti: str, until: datetime, agreement_id: str | None, usage: Usage
    ) -> list[tuple[str, tuple[Any, ...]]]:
        spend = (iss, jti, self.expires(until))
        windows = (usage.minute, usage.day)
        if self.postgres:
            if agreement_id is None:
                return [(_PG_CLAIM_JTI, spend)]
            return [(_PG_CLAIM_AND_RESERVE, (*spend, agreement_id, *windows))]
        out: list[tuple[str, tuple[Any, ...]]] = [(_INSERT_JTI, spend)]
        if agreement_id is not None:
            out.append((_RESERVE, (agreement_id, usage.minute, agreement_id, usage.day)))
        return out


_GIVE_BACK = (
    'UPDATE usage_counter SET count = count - 1 WHERE agreement_id = ? AND "window" IN (?, ?)'
)
PG_GIVE_BACK = (  # without waiting for the WAL flush, like the claim it undoes
    "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true)) "
    "UPDATE usage_counter SET count = count - 1 FROM lazy "
    'WHERE agreement_id = %s AND "window" IN (%s, %s)'
)


def _transaction(engine: Engine) -> AbstractContextManager[Any]:
    """PostgreSQL: one autocommitted statement; SQLite: a lazy write transaction."""
    if engine.dialect.name == "postgresql":
        return single_statement_cursor(engine)
    return raw_lazy_transaction(engine)


def release_quota(engine: Engine, reservation: QuotaReservation) -> None:
    """Give a reservation back: the exchange was refused or failed, nothing was released."""
    usage = reservation.usage
    sql = PG_GIVE_BACK if engine.dialect.name == "postgresql" else _GIVE_BACK
    try:
        with write_lock(engine), _transaction(engine) as cur:
            cur.execute(sql, (reservation.agreement_id, usage.minute, usage.day))
    except (engine.dialect.loaded_dbapi.Error, SQLAlchemyError, OSError):
        pass  # a counter left one too high only errs on the side of refusing
