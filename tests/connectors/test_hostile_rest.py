"""A misbehaving REST provider on 127.0.0.1: every fault gets a stable code, bounded.

The server (``hostile_server``) is real; the connector is built from a plain
config. Tests assert codes and hit counts, never wall time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.config import build_connector
from connectors.interface import ConnectorError, MappingError
from connectors.mapping import load_mapping
from connectors.rest import RestConnector
from examples.launch import mapping_path
from tests.connectors.conftest import hits, reset

FIELDS = [
    "ssn",
    "name",
    "dob",
    "gender",
    "civil_status",
    "residence",
    "household_ref",
    "registered_at",
]


def config(url: str, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "kind": "rest",
        "name": "hostile",
        "base_url": url,
        "timeouts": {"connect": 1.0, "read": 0.5, "total": 1.5},
        "retries": {"attempts": 3, "backoff": 0.01, "max_wait": 0.5},
        "breaker": {"failures": 100, "reset_after": 60},
        "max_response_bytes": 1024 * 1024,
        "entities": {
            mode: {"key": "ssn", "path": f"/rest/{mode}/{{key}}", "fields": FIELDS}
            for mode in [
                "good",
                "busy",
                "slow",
                "trickle",
                "endless",
                "huge",
                "gzipbomb",
                "html",
                "badjson",
                "nan",
                "deep",
                "array",
                "unknown_code",
                "malformed",
                "always503",
                "flaky",
                "ratelimited",
                "error500",
                "unauthorised",
                "redirect",
                "ratelimited_long",
                "ratelimited_bare",
                "plain_json",
                "no_type",
                "lying_length",
                "flaky502",
                "gateway_timeout",
            ]
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture
async def rest(hostile_url: str) -> AsyncIterator[RestConnector]:
    reset(hostile_url)
    conn = build_connector(config(hostile_url))
    assert isinstance(conn, RestConnector)
    yield conn
    await conn.aclose()


async def code_of(conn: RestConnector, mode: str) -> str:
    with pytest.raises(ConnectorError) as err:
        await conn.fetch(mode, "12345678901", FIELDS)
    return err.value.code


async def test_good_record_passes(rest: RestConnector) -> None:
    result = await rest.fetch("good", "12345678901", FIELDS)
    assert result.record["ssn"] == "12345678901"


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("slow", "connector_timeout"),
        ("trickle", "connector_timeout"),
        ("endless", "response_too_large"),
        ("huge", "response_too_large"),
        ("gzipbomb", "response_too_large"),
        ("html", "connector_bad_response"),
        ("badjson", "connector_bad_response"),
        ("nan", "connector_bad_response"),
        ("deep", "connector_bad_response"),
        ("array", "connector_bad_response"),
        ("error500", "connector_unavailable"),
        ("unauthorised", "connector_auth_failed"),
        ("redirect", "connector_bad_response"),
        ("plain_json", "connector_bad_response"),
        ("no_type", "connector_bad_response"),
        ("lying_length", "response_too_large"),
    ],
)
async def test_hostile_answer_maps_to_stable_code(
    rest: RestConnector, mode: str, code: str
) -> None:
    assert await code_of(rest, mode) == code


async def test_transient_503_is_retried_then_reported(
    rest: RestConnector, hostile_url: str
) -> None:
    assert await code_of(rest, "always503") == "connector_unavailable"
    assert hits(hostile_url)["hits"]["always503"] == 3


async def test_flaky_provider_succeeds_after_retries(rest: RestConnector, hostile_url: str) -> None:
    result = await rest.fetch("flaky", "12345678901", ["ssn"])
    assert result.record == {"ssn": "12345678901"}
    assert hits(hostile_url)["hits"]["flaky"] == 3


async def test_429_with_retry_after_is_retried(rest: RestConnector, hostile_url: str) -> None:
    result = await rest.fetch("ratelimited", "12345678901", ["ssn"])
    assert result.record == {"ssn": "12345678901"}
    assert hits(hostile_url)["hits"]["ratelimited"] == 2


async def test_server_error_500_is_not_retried(rest: RestConnector, hostile_url: str) -> None:
    await code_of(rest, "error500")
    assert hits(hostile_url)["hits"]["error500"] == 1


async def test_circuit_opens_and_stops_calling_the_provider(hostile_url: str) -> None:
    reset(hostile_url)
    conn = build_connector(
        config(hostile_url, retries={"attempts": 1}, breaker={"failures": 3, "reset_after": 60})
    )
    try:
        codes = [await code_of(conn, "always503") for _ in range(5)]  # type: ignore[arg-type]
    finally:
        await conn.aclose()
    assert codes[:3] == ["connector_unavailable"] * 3
    assert codes[3:] == ["connector_circuit_open"] * 2
    assert hits(hostile_url)["hits"]["always503"] == 3


async def test_concurrency_cap_bounds_inflight_calls(hostile_url: str) -> None:
    reset(hostile_url)
    conn = build_connector(
        config(hostile_url, max_concurrency=3, timeouts={"connect": 1, "read": 5, "total": 20})
    )
    try:
        results = await asyncio.gather(
            *(conn.fetch("busy", "12345678901", ["ssn"]) for _ in range(12))
        )
    finally:
        await conn.aclose()
    assert len(results) == 12
    assert hits(hostile_url)["max_inflight"] <= 3


async def test_deadline_from_context_is_honoured(rest: RestConnector) -> None:
    from connectors.interface import FetchContext

    with pytest.raises(ConnectorError) as err:
        await rest.fetch("slow", "12345678901", FIELDS, FetchContext(timeout=0.2))
    assert err.value.code == "connector_timeout"


@pytest.mark.parametrize(
    ("mode", "code"), [("unknown_code", "mapping_error"), ("malformed", "mapping_error")]
)
async def test_bad_records_fail_mapping_with_nothing_released(
    rest: RestConnector, mode: str, code: str
) -> None:
    mapping = load_mapping(mapping_path("civil_registry", "citizen"))
    result = await rest.fetch(mode, "12345678901", FIELDS)
    with pytest.raises(MappingError) as err:
        mapping.map(result.record)
    assert err.value.code == code
    assert "Q" not in err.value.detail  # the offending value is not echoed


async def test_unreachable_provider_is_unavailable() -> None:
    from tests._support.servers import free_port

    conn = build_connector(config(f"http://127.0.0.1:{free_port()}"))
    try:
        assert await code_of(conn, "good") == "connector_unavailable"  # type: ignore[arg-type]
    finally:
        await conn.aclose()


async def test_429_asking_to_wait_past_the_deadline_is_not_retried(
    rest: RestConnector, hostile_url: str
) -> None:
    # Retry-After: 120 is beyond the budget: fail now instead of sleeping.
    assert await code_of(rest, "ratelimited_long") == "connector_unavailable"
    assert hits(hostile_url)["hits"]["ratelimited_long"] == 1


async def test_429_without_retry_after_is_not_retried(
    rest: RestConnector, hostile_url: str
) -> None:
    assert await code_of(rest, "ratelimited_bare") == "connector_unavailable"
    assert hits(hostile_url)["hits"]["ratelimited_bare"] == 1


async def test_502_is_transient_and_retried(rest: RestConnector, hostile_url: str) -> None:
    result = await rest.fetch("flaky502", "12345678901", ["ssn"])
    assert result.record == {"ssn": "12345678901"}
    assert hits(hostile_url)["hits"]["flaky502"] == 2


async def test_504_is_retried_up_to_the_attempt_limit(
    rest: RestConnector, hostile_url: str
) -> None:
    assert await code_of(rest, "gateway_timeout") == "connector_unavailable"
    assert hits(hostile_url)["hits"]["gateway_timeout"] == 3


@pytest.mark.parametrize("mode", ["slow", "html", "unauthorised", "error500"])
async def test_non_transient_faults_are_not_retried(
    rest: RestConnector, hostile_url: str, mode: str
) -> None:
    await code_of(rest, mode)
    assert hits(hostile_url)["hits"][mode] == 1


async def test_key_cannot_change_the_request_path(rest: RestConnector, hostile_url: str) -> None:
    spec = rest.entities["good"]
    rest.entities["good"] = dataclasses.replace(spec, key_pattern=re.compile(r".{1,64}"))
    # A permissive key pattern still cannot walk the path: the key is percent-encoded,
    # so "../../_hits" never reaches the (JSON-answering) /_hits route.
    with pytest.raises(ConnectorError) as err:
        await rest.fetch("good", "../../_hits", ["ssn"])
    assert err.value.code == "not_found"


@pytest.mark.parametrize("mode", ["page_mixed", "page_no_items", "page_bad_cursor"])
async def test_malformed_page_is_refused_whole(hostile_url: str, mode: str) -> None:
    cfg = config(hostile_url)
    cfg["entities"] = {mode: {"key": "ssn", "list_path": f"/rest/{mode}", "fields": FIELDS}}
    conn = build_connector(cfg)
    try:
        with pytest.raises(ConnectorError) as err:
            await conn.read(mode, ["ssn"])
    finally:
        await conn.aclose()
    assert err.value.code == "connector_bad_response"


@pytest.mark.parametrize("mode", ["array", "html", "badjson"])
async def test_hostile_openapi_document_is_bad_response(hostile_url: str, mode: str) -> None:
    conn = build_connector(config(hostile_url, openapi_path=f"/rest/{mode}"))
    try:
        with pytest.raises(ConnectorError) as err:
            await conn.discover()
    finally:
        await conn.aclose()
    assert err.value.code == "connector_bad_response"
