"""SQL connector: a department database read through SQLAlchemy, read-only.

Table and column names come only from the config and are checked against the
database's own reflection, then quoted by SQLAlchemy; keys and filters are
always bound parameters; only the allowed fields are put in the SELECT list.
The connection is read-only at the database (``default_transaction_read_only``
on PostgreSQL, ``mode=ro`` on SQLite) and every statement is bounded by a
server-side timeout (PostgreSQL) or a progress handler (SQLite). The blocking
driver runs in a worker thread so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from connectors._entities import EntitySpec, entity, parse_entities, project
from connectors.interface import (
    Connector,
    ConnectorBadResponse,
    ConnectorConfigError,
    ConnectorTimeout,
    ConnectorUnavailable,
    EntitySchema,
    FetchContext,
    FetchResult,
    Health,
    NotFound,
    Page,
    ResponseTooLarge,
    freeze_record,
)
from connectors.resilience import (
    Deadline,
    Resilience,
    ResilienceSettings,
    RetryableFault,
    config_count,
)

__all__ = ["SqlConnector"]

T = TypeVar("T")

_JSON_TYPES: dict[type[Any], str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
}


class SqlConnector(Connector):
    """One table or view per entity; ``key`` is a column, ``fields`` its columns."""

    kind = "sql"

    def __init__(self, config: Mapping[str, Any]) -> None:
        name = str(config.get("name", "sql"))
        super().__init__(name)
        url = config.get("url")
        if not isinstance(url, str) or not url:
            raise ConnectorConfigError("sql connector needs a 'url'", connector=name)
        self.entities = parse_entities(config, name)
        self.settings = ResilienceSettings.from_config(dict(config))
        self.resilience = Resilience(name, self.settings)
        self.max_rows = config_count(config, "max_rows", 1000, name)
        self.engine = _read_only_engine(url, self.settings, name)
        self._tables: dict[str, sa.Table] = {}

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.dispose)

    # ----------------------------------------------------------------- interface

    async def check(self, ctx: FetchContext | None = None) -> Health:
        start = time.perf_counter()

        async def op(deadline: Deadline) -> Any:
            return await self._run(lambda c: c.execute(sa.text("SELECT 1")).scalar(), deadline)

        await self.resilience.call(op, idempotent=True, ctx=ctx)
        return Health(self.name, self.kind, "ok", (time.perf_counter() - start) * 1000)

    async def discover(self, ctx: FetchContext | None = None) -> tuple[EntitySchema, ...]:
        async def op(deadline: Deadline) -> tuple[EntitySchema, ...]:
            out = []
            for spec in self.entities.values():
                table = await self._table(spec, deadline)
                props: dict[str, Any] = {}
                for col in table.columns:
                    if col.name not in spec.fields:
                        continue
                    try:
                        jtype = _JSON_TYPES.get(col.type.python_type, "string")
                    except NotImplementedError:
                        jtype = "string"
                    props[col.name] = {"type": [jtype, "null"] if col.nullable else jtype}
                schema = {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": props,
                }
                out.append(EntitySchema(spec.name, spec.key, schema))
            return tuple(out)

        return await self.resilience.call(op, idempotent=True, ctx=ctx)

    async def fetch(
        self, entity_name: str, key: str, fields: Sequence[str], ctx: FetchContext | None = None
    ) -> FetchResult:
        spec = entity(self.entities, entity_name, self.name)
        wanted = spec.check_fields(fields, self.name)
        spec.check_key(key, self.name)

        async def op(deadline: Deadline) -> list[dict[str, Any]]:
            table = await self._table(spec, deadline)
            stmt = (
                sa.select(*[table.c[f] for f in wanted])
                .where(table.c[spec.key] == sa.bindparam("key", _typed(table, spec.key, key)))
                .limit(2)
            )
            return await self._rows(stmt, deadline)

        rows = await self.resilience.call(op, idempotent=True, ctx=ctx)
        if not rows:
            raise NotFound("provider has no such record", connector=self.name)
        if len(rows) > 1:
            raise ConnectorBadResponse("key is not unique at the provider", connector=self.name)
        return FetchResult(
            self.name, spec.name, key, freeze_record(project(rows[0], wanted)), wanted
        )

    async def read(
        self,
        entity_name: str,
        fields: Sequence[str],
        *,
        filters: Mapping[str, str] | None = None,
        cursor: str | None = None,
        limit: int = 100,
        ctx: FetchContext | None = None,
    ) -> Page:
        spec = entity(self.entities, entity_name, self.name)
        wanted = spec.check_fields(fields, self.name)
        if filters:
            spec.check_fields(list(filters), self.name)
        if cursor is not None:
            spec.check_key(cursor, self.name)
        size = max(1, min(limit, self.max_rows))

        async def op(deadline: Deadline) -> list[dict[str, Any]]:
            table = await self._table(spec, deadline)
            cols = list(dict.fromkeys([*wanted, spec.key]))
            stmt = sa.select(*[table.c[c] for c in cols])
            for i, (col, value) in enumerate(sorted((filters or {}).items())):
                stmt = stmt.where(table.c[col] == sa.bindparam(f"f{i}", value))
            if cursor is not None:
                stmt = stmt.where(
                    table.c[spec.key] > sa.bindparam("cursor", _typed(table, spec.key, cursor))
                )
            stmt = stmt.order_by(table.c[spec.key]).limit(size + 1)
            return await self._rows(stmt, deadline)

        rows = await self.resilience.call(op, idempotent=True, ctx=ctx)
        nxt = str(rows[size - 1][spec.key]) if len(rows) > size else None
        records = tuple(freeze_record(project(r, wanted)) for r in rows[:size])
        return Page(self.name, spec.name, records, nxt, wanted)

    # ----------------------------------------------------------------- database

    async def _table(self, spec: EntitySpec, deadline: Deadline) -> sa.Table:
        if spec.name in self._tables:
            return self._tables[spec.name]
        table_name = str(spec.options.get("table", spec.name))
        schema = spec.options.get("schema")

        def reflect(conn: sa.Connection) -> sa.Table:
            return sa.Table(
                table_name,
                sa.MetaData(),
                autoload_with=conn,
                schema=str(schema) if schema else None,
            )

        try:
            table = await self._run(reflect, deadline)
        except sa.exc.NoSuchTableError as exc:
            raise ConnectorConfigError(
                f"table {table_name!r} does not exist", connector=self.name
            ) from exc
        missing = [c for c in (spec.key, *spec.fields) if c not in table.c]
        if missing:
            raise ConnectorConfigError(
                f"table {table_name!r} lacks columns {missing}", connector=self.name
            )
        self._tables[spec.name] = table
        return table

    async def _rows(self, stmt: sa.Select[Any], deadline: Deadline) -> list[dict[str, Any]]:
        cap = self.settings.max_response_bytes

        def run(conn: sa.Connection) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            size = 0
            for row in conn.execute(stmt).mappings():
                rec = {k: _jsonable(v) for k, v in row.items()}
                size += sum(len(str(v)) for v in rec.values())
                if size > cap:
                    raise ResponseTooLarge("result exceeds the byte cap", connector=self.name)
                out.append(rec)
            return out

        return await self._run(run, deadline)

    async def _run(self, fn: Callable[[sa.Connection], T], deadline: Deadline) -> T:
        def work() -> T:
            with self.engine.connect() as conn:
                _arm_sqlite_deadline(conn, deadline)
                try:
                    return fn(conn)
                finally:
                    conn.rollback()

        try:
            return await asyncio.to_thread(work)
        except (ConnectorBadResponse, ConnectorConfigError):
            raise
        except sa.exc.NoSuchTableError:
            raise
        except OperationalError as exc:
            text = str(exc.orig).lower() if exc.orig is not None else ""
            if "interrupted" in text or "statement timeout" in text or "canceling" in text:
                raise ConnectorTimeout("query exceeded its deadline", connector=self.name) from exc
            raise RetryableFault(
                "database unavailable",
                connector=self.name,
                final=ConnectorUnavailable("database unavailable", connector=self.name),
            ) from exc
        except DBAPIError as exc:
            raise ConnectorBadResponse(
                f"database rejected the query ({type(exc.orig).__name__})", connector=self.name
            ) from exc
        except SQLAlchemyError as exc:
            raise ConnectorUnavailable(
                f"database error ({type(exc).__name__})", connector=self.name
            ) from exc


def _typed(table: sa.Table, column: str, value: str) -> Any:
    """Bind a key as the column's own type, so integer keys compare as integers."""
    if isinstance(table.c[column].type, sa.Integer):
        try:
            return int(value)
        except ValueError:
            return None  # a non-numeric key matches no row of an integer column
    return value


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)  # Decimal and friends: keep the exact digits


def _arm_sqlite_deadline(conn: sa.Connection, deadline: Deadline) -> None:
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        raw.set_progress_handler(lambda: 1 if deadline.expired() else 0, 1000)


def _read_only_engine(url: str, s: ResilienceSettings, name: str) -> Engine:
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConnectorConfigError("sql url does not parse", connector=name) from exc
    backend = parsed.get_backend_name()
    pool = {
        "pool_size": s.max_concurrency,
        "max_overflow": 0,
        "pool_timeout": s.total_timeout,
        "pool_pre_ping": True,
    }
    if backend == "sqlite":
        db = parsed.database or ""
        if not db or db == ":memory:":
            raise ConnectorConfigError("sqlite connector needs a database file", connector=name)
        engine = sa.create_engine(
            f"sqlite:///file:{db}?mode=ro&uri=true",
            connect_args={"timeout": s.connect_timeout, "check_same_thread": False},
            **{**pool, "pool_pre_ping": False},  # a local file has no connection to lose
        )
    elif backend == "postgresql":
        ms = int(s.read_timeout * 1000)
        engine = sa.create_engine(
            parsed,
            connect_args={
                "connect_timeout": max(1, int(s.connect_timeout)),
                "options": f"-c default_transaction_read_only=on -c statement_timeout={ms}",
            },
            **pool,
        )
    else:
        raise ConnectorConfigError(f"unsupported database {backend!r}", connector=name)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.execute("PRAGMA query_only = ON")

    return engine
