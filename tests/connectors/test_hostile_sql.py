"""A hostile or broken department database, on SQLite and on a real PostgreSQL.

The health insurer's real schema is seeded, then extra objects a careless or
hostile DBA could leave behind: a view that never finishes, a view with a
gigantic value, a "key" column that is not unique, a row with an unknown code.
Injection strings travel as bound parameters (or are refused by the key
pattern), the connection cannot write, and every fault ends in a stable code.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.config import build_connector
from connectors.interface import ConnectorError, InvalidKey, MappingError, NotFound
from connectors.mapping import load_mapping
from connectors.sql import SqlConnector
from examples.health_insurer.db import seed
from examples.launch import mapping_path

COVER = ["MEMBER_SSN", "POLICY_NO", "PLAN_CD", "STATUS_CD", "START_YMD", "END_YMD",
         "PREMIUM_CENTS", "BRANCH"]  # fmt: skip
INJECTIONS = [
    "' OR '1'='1",
    "1' OR 1=1 --",
    '1; DROP TABLE "MEMBER_COVER"; --',
    'x\' UNION SELECT "POLICY_NO" FROM "MEMBER_COVER" --',
    '\\\'; DELETE FROM "MEMBER_COVER"; --',
]
BAD_KEY = "99999999999"


def _hostile_objects(url: str) -> None:
    engine = sa.create_engine(url)
    pg = engine.dialect.name == "postgresql"
    big = "repeat('x', 600000)" if pg else "replace(hex(zeroblob(300000)), '0', 'x')"
    slow = (
        'SELECT \'1\'::text AS "K", pg_sleep(30)::text AS "V"'
        if pg
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        'WHERE x < 2000000000) SELECT \'1\' AS "K", CAST(max(x) AS TEXT) AS "V" FROM c'
    )
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE VIEW "SLOW_VIEW" AS {slow}'))
        conn.execute(sa.text(f'CREATE VIEW "BIG_VIEW" AS SELECT \'1\' AS "K", {big} AS "V"'))
        conn.execute(sa.text('CREATE TABLE "DUP" ("K" VARCHAR(11), "V" VARCHAR(10))'))
        conn.execute(sa.text("INSERT INTO \"DUP\" VALUES ('1', 'a'), ('1', 'b')"))
        conn.execute(
            sa.text(
                'INSERT INTO "MEMBER_COVER" VALUES '
                f"('HI-X', '{BAD_KEY}', 'X', 'ZZZ', 7, 20200101, NULL, 1000, 'Nowhere')"
            )
        )
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def hostile_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'insurer.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    seed(url)
    _hostile_objects(url)
    return url


def config(url: str, **over: Any) -> dict[str, Any]:
    kv = {"key": "K", "key_pattern": "[0-9]{1,11}", "fields": ["K", "V"]}
    cfg: dict[str, Any] = {
        "kind": "sql",
        "name": "hostile_insurer",
        "url": url,
        "timeouts": {"connect": 2.0, "read": 0.5, "total": 3.0},
        "retries": {"attempts": 3, "backoff": 0.01},
        "max_response_bytes": 256 * 1024,
        "entities": {
            "member_cover": {
                "table": "MEMBER_COVER",
                "key": "MEMBER_SSN",
                "key_pattern": "[0-9]{11}",
                "fields": COVER,
            },
            "slow": {**kv, "table": "SLOW_VIEW"},
            "big": {**kv, "table": "BIG_VIEW"},
            "dup": {**kv, "table": "DUP"},
            "ghost": {**kv, "table": "NO_SUCH_TABLE"},
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture
async def sql(hostile_db: str) -> AsyncIterator[SqlConnector]:
    conn = build_connector(config(hostile_db))
    assert isinstance(conn, SqlConnector)
    yield conn
    await conn.aclose()


def _count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text('SELECT count(*) FROM "MEMBER_COVER"')).scalar_one())
    finally:
        engine.dispose()


async def code_of(conn: SqlConnector, entity: str, key: str = "1") -> str:
    fields = conn.entities[entity].fields
    with pytest.raises(ConnectorError) as err:
        await conn.fetch(entity, key, fields)
    return err.value.code


@pytest.mark.parametrize("key", INJECTIONS)
async def test_sql_injection_key_refused_by_key_pattern(sql: SqlConnector, key: str) -> None:
    with pytest.raises(InvalidKey):
        await sql.fetch("member_cover", key, COVER)


@pytest.mark.parametrize("key", INJECTIONS)
async def test_sql_injection_key_is_only_ever_a_bound_value(
    sql: SqlConnector, hostile_db: str, key: str
) -> None:
    # Even with a key pattern that lets anything through, the key is data, not SQL.
    before = _count(hostile_db)
    spec = sql.entities["member_cover"]
    sql.entities["member_cover"] = dataclasses.replace(spec, key_pattern=re.compile(r".{1,200}"))
    with pytest.raises(NotFound):
        await sql.fetch("member_cover", key, COVER)
    assert _count(hostile_db) == before


@pytest.mark.parametrize("value", INJECTIONS)
async def test_sql_injection_in_read_filters_matches_nothing(
    sql: SqlConnector, hostile_db: str, value: str
) -> None:
    before = _count(hostile_db)
    page = await sql.read("member_cover", ["MEMBER_SSN"], filters={"BRANCH": value})
    assert page.records == ()
    assert _count(hostile_db) == before


async def test_filter_on_a_column_not_exposed_is_refused(sql: SqlConnector) -> None:
    with pytest.raises(ConnectorError) as err:
        await sql.read("member_cover", ["MEMBER_SSN"], filters={"SURNAME": "X"})
    assert err.value.code == "unknown_field"


async def test_connection_is_read_only_at_the_database(sql: SqlConnector) -> None:
    with sql.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
        conn.execute(sa.text('DELETE FROM "MEMBER_COVER"'))


async def test_only_allowed_columns_are_selected(sql: SqlConnector, hostile_db: str) -> None:
    statements: list[str] = []
    sa.event.listen(sql.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    result = await sql.fetch("member_cover", _any_key(hostile_db), ["PLAN_CD"])
    select = next(s for s in statements if "MEMBER_COVER" in s and "SELECT" in s.upper())
    assert "SURNAME" not in select
    assert "PREMIUM_CENTS" not in select
    assert set(result.record) == {"PLAN_CD"}


def _any_key(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            q = 'SELECT "MEMBER_SSN" FROM "MEMBER_COVER" ORDER BY "MEMBER_SSN"'
            return str(conn.execute(sa.text(q)).scalar())
    finally:
        engine.dispose()


async def test_query_that_never_finishes_times_out(sql: SqlConnector) -> None:
    assert await code_of(sql, "slow") == "connector_timeout"


async def test_gigantic_value_is_capped(sql: SqlConnector) -> None:
    assert await code_of(sql, "big") == "response_too_large"


async def test_duplicate_key_is_bad_response_not_a_guess(sql: SqlConnector) -> None:
    assert await code_of(sql, "dup") == "connector_bad_response"


async def test_missing_table_is_a_config_error(sql: SqlConnector) -> None:
    assert await code_of(sql, "ghost") == "connector_config_invalid"


async def test_unknown_code_in_a_row_fails_mapping(sql: SqlConnector) -> None:
    mapping = load_mapping(mapping_path("health_insurer", "member_cover"))
    result = await sql.fetch("member_cover", BAD_KEY, mapping.required_source_fields())
    with pytest.raises(MappingError) as err:
        mapping.map(result.record)
    assert err.value.code == "mapping_error"
    assert "ZZZ" not in err.value.detail


async def test_unreachable_postgresql_is_unavailable_after_retries() -> None:
    from tests._support.servers import free_port

    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    conn = build_connector(config(url, timeouts={"connect": 1, "read": 1, "total": 5}))
    try:
        with pytest.raises(ConnectorError) as err:
            await conn.fetch("member_cover", "12345678901", COVER)
    finally:
        await conn.aclose()
    assert err.value.code == "connector_unavailable"
    assert "nobody" not in err.value.detail


async def test_missing_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    conn = build_connector(config(f"sqlite:///{tmp_path / 'gone.db'}"))
    try:
        assert await code_of(conn, "member_cover", "12345678901") == "connector_unavailable"  # type: ignore[arg-type]
    finally:
        await conn.aclose()
    assert not (tmp_path / "gone.db").exists()  # read-only mode never creates it


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://x@h/db", "::"])
def test_unsupported_or_memory_databases_are_config_errors(url: str) -> None:
    with pytest.raises(ConnectorError) as err:
        build_connector(config(url))
    assert err.value.code == "connector_config_invalid"
