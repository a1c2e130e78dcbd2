"""The shared suite every connector kind passes (REST, SQL on SQLite and PostgreSQL, SOAP, CSV).

Each test talks to the real sample department system through the connector
built from the department's own declarative config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.config import build_connector
from connectors.interface import (
    Connector,
    ConnectorError,
    FetchContext,
    Health,
    InvalidKey,
    NotFound,
    UnknownField,
)
from connectors.mapping import load_mapping
from examples.launch import Departments, mapping_path
from tests._support.servers import free_port
from tests.connectors.conftest import Case


async def test_check_reports_health(connector: Connector, case: Case) -> None:
    health = await connector.check()
    assert isinstance(health, Health)
    assert health.kind == case.kind
    assert health.connector == case.department


async def test_discover_describes_only_exposed_fields(connector: Connector, case: Case) -> None:
    schemas = {s.name: s for s in await connector.discover()}
    assert case.entity in schemas
    props = schemas[case.entity].json_schema["properties"]
    allowed = set(case.config["entities"][case.entity]["fields"])
    assert props
    assert set(props) <= allowed


async def test_fetch_returns_exactly_the_requested_fields(connector: Connector, case: Case) -> None:
    fields = case.config["entities"][case.entity]["fields"]
    result = await connector.fetch(
        case.entity, case.key, fields[:2], FetchContext(exchange_id="x1")
    )
    assert set(result.record) <= set(fields[:2])
    assert result.key == case.key
    assert result.fields == tuple(fields[:2])
    assert result.record  # the sample data has these fields


async def test_fetched_record_is_frozen(connector: Connector, case: Case) -> None:
    fields = case.config["entities"][case.entity]["fields"]
    result = await connector.fetch(case.entity, case.key, fields)
    with pytest.raises(TypeError):
        result.record[fields[0]] = "tampered"  # type: ignore[index]


async def test_fetch_then_map_validates_against_canonical(connector: Connector, case: Case) -> None:
    mapping = load_mapping(mapping_path(case.department, case.entity))
    result = await connector.fetch(case.entity, case.key, mapping.required_source_fields())
    out = mapping.map(result.record)
    assert out  # validated against the canonical schema inside map()


async def test_missing_key_is_not_found(connector: Connector, case: Case) -> None:
    fields = case.config["entities"][case.entity]["fields"]
    with pytest.raises(NotFound) as err:
        await connector.fetch(case.entity, case.missing_key, fields)
    assert err.value.code == "not_found"


@pytest.mark.parametrize(
    "key", ["' OR '1'='1", "1; DROP TABLE x", "../../etc/passwd", "", "1" * 500, "12345678901\n"]
)
async def test_malformed_key_is_refused_before_the_provider(
    connector: Connector, case: Case, key: str
) -> None:
    fields = case.config["entities"][case.entity]["fields"]
    with pytest.raises(InvalidKey) as err:
        await connector.fetch(case.entity, key, fields)
    assert err.value.code == "invalid_key"


async def test_unknown_field_and_entity_are_refused(connector: Connector, case: Case) -> None:
    with pytest.raises(UnknownField):
        await connector.fetch(case.entity, case.key, ["password"])
    with pytest.raises(UnknownField):
        await connector.fetch("secrets", case.key, ["x"])
    with pytest.raises(UnknownField):
        await connector.fetch(case.entity, case.key, [])


async def test_read_pages_through_everything_once(connector: Connector, case: Case) -> None:
    fields = case.config["entities"][case.entity]["fields"][:2]
    if not case.pageable:
        with pytest.raises(ConnectorError):
            await connector.read(case.entity, fields)
        return
    seen: list[tuple[str, ...]] = []
    cursor = None
    for _ in range(100):
        page = await connector.read(case.entity, fields, cursor=cursor, limit=37)
        assert all(set(r) <= set(fields) for r in page.records)
        seen.extend(tuple(str(v) for v in r.values()) for r in page.records)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) > 37
    assert len(seen) == len(set(seen))


def _gone(case: Case, tmp_path: Path) -> dict[str, Any]:
    """The case's config pointed at a provider that is not there."""
    cfg = dict(case.config)
    cfg["retries"] = {"attempts": 1}
    dead = f"127.0.0.1:{free_port()}"
    if case.kind == "rest":
        cfg["base_url"] = f"http://{dead}"
    elif case.kind == "soap":
        cfg["address"] = f"http://{dead}/soap"
    elif case.kind == "sql":
        sqlite = str(cfg["url"]).startswith("sqlite")
        cfg["url"] = (
            f"sqlite:///{tmp_path / 'gone.db'}" if sqlite else f"postgresql+psycopg://x@{dead}/x"
        )
    else:
        cfg["directory"] = str(tmp_path)
    return cfg


async def test_check_and_fetch_fail_cleanly_when_the_provider_is_gone(
    case: Case, tmp_path: Path
) -> None:
    conn = build_connector(_gone(case, tmp_path))
    fields = case.config["entities"][case.entity]["fields"]
    try:
        with pytest.raises(ConnectorError) as checked:
            await conn.check()
        with pytest.raises(ConnectorError) as fetched:
            await conn.fetch(case.entity, case.key, fields)
    finally:
        await conn.aclose()
    assert checked.value.code == "connector_unavailable"
    assert fetched.value.code == "connector_unavailable"


async def test_wrong_credentials_are_auth_failed(departments: Departments) -> None:
    cfg = departments.config("civil_registry")
    cfg["auth"] = {"token": "stolen-or-stale"}
    conn = build_connector(cfg)
    try:
        with pytest.raises(ConnectorError) as err:
            await conn.check()
    finally:
        await conn.aclose()
    assert err.value.code == "connector_auth_failed"
