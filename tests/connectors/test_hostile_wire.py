"""Faults below HTTP itself, and what the HTTP connectors must never carry across calls.

``raw_server`` writes exact bytes on a real loopback socket: a body cut
short, a gzip stream that is not gzip, a status line that is not HTTP, a
header too large to parse, a socket closed without an answer. Each must end
in a stable code without a retry. The same server records request heads, so
the tests can also see that cookies are not kept, environment proxies are not
used, redirects are not followed and the configured credentials are sent.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.config import build_connector
from connectors.interface import Connector, ConnectorError
from tests.connectors.conftest import WSDL
from tests.connectors.raw_server import RawServer

MODES = [
    "good",
    "cut_short",
    "cut_short_chunked",
    "bad_gzip",
    "gzip_ok",
    "huge_header",
    "not_http",
    "silent_close",
    "set_cookie",
    "redirect_home",
]
KEY = "12345678901"


def rest_config(url: str, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "kind": "rest",
        "name": "wire",
        "base_url": url,
        "timeouts": {"connect": 1.0, "read": 1.0, "total": 3.0},
        "retries": {"attempts": 3, "backoff": 0.01, "max_wait": 0.5},
        "breaker": {"failures": 100, "reset_after": 60},
        "entities": {
            mode: {"key": "ssn", "path": f"/rest/{mode}/{{key}}", "fields": ["ssn"]}
            for mode in MODES
        },
    }
    cfg.update(over)
    return cfg


def soap_config(url: str, mode: str) -> dict[str, Any]:
    return {
        "kind": "soap",
        "name": "wire_tax",
        "wsdl": str(WSDL),
        "address": f"{url}/soap/{mode}",
        "timeouts": {"connect": 1.0, "read": 1.0, "total": 3.0},
        "retries": {"attempts": 3, "backoff": 0.01, "max_wait": 0.5},
        "entities": {
            "tax_status": {
                "operation": "GetTaxStatus",
                "key": "TaxpayerId",
                "fields": ["TaxpayerId"],
            }
        },
    }


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def rest(raw: RawServer) -> AsyncIterator[Connector]:
    conn = build_connector(rest_config(raw.url))
    yield conn
    await conn.aclose()


async def code_of(conn: Connector, entity: str) -> str:
    with pytest.raises(ConnectorError) as err:
        await conn.fetch(entity, KEY, ["ssn"] if conn.kind == "rest" else ["TaxpayerId"])
    return err.value.code


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("cut_short", "connector_unavailable"),
        ("cut_short_chunked", "connector_unavailable"),
        ("bad_gzip", "connector_bad_response"),
        ("huge_header", "connector_unavailable"),
        ("not_http", "connector_unavailable"),
        ("silent_close", "connector_unavailable"),
        ("redirect_home", "connector_bad_response"),
    ],
)
async def test_malformed_http_from_a_rest_provider_is_one_call_and_a_stable_code(
    rest: Connector, raw: RawServer, mode: str, code: str
) -> None:
    assert await code_of(rest, mode) == code
    assert raw.modes() == [mode]  # not retried, and a redirect is not followed


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("cut_short", "connector_unavailable"),
        ("bad_gzip", "connector_bad_response"),
        ("not_http", "connector_unavailable"),
        ("silent_close", "connector_unavailable"),
        ("redirect_home", "connector_bad_response"),
    ],
)
async def test_malformed_http_from_a_soap_provider_is_one_call_and_a_stable_code(
    raw: RawServer, mode: str, code: str
) -> None:
    conn = build_connector(soap_config(raw.url, mode))
    try:
        assert await code_of(conn, "tax_status") == code
    finally:
        await conn.aclose()
    assert raw.modes() == [mode]


async def test_gzip_encoded_answer_is_decoded(rest: Connector) -> None:
    result = await rest.fetch("gzip_ok", KEY, ["ssn"])
    assert result.record == {"ssn": KEY}


async def test_provider_cookie_is_not_sent_back(rest: Connector, raw: RawServer) -> None:
    await rest.fetch("set_cookie", KEY, ["ssn"])
    await rest.fetch("good", KEY, ["ssn"])
    assert raw.modes() == ["set_cookie", "good"]
    assert "cookie" not in raw.requests[1].headers


async def test_proxy_from_the_environment_is_ignored(
    raw: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    conn = build_connector(rest_config(raw.url))
    try:
        assert (await conn.fetch("good", KEY, ["ssn"])).record == {"ssn": KEY}
    finally:
        await conn.aclose()
    assert raw.requests[0].target == f"/rest/good/{KEY}"


async def test_configured_credentials_are_sent(raw: RawServer) -> None:
    conn = build_connector(rest_config(raw.url, auth={"token": "t0ken"}))
    try:
        await conn.fetch("good", KEY, ["ssn"])
    finally:
        await conn.aclose()
    assert raw.requests[0].headers["authorization"] == "Bearer t0ken"
    assert raw.requests[0].headers["accept"] == "application/json"


async def test_base_url_path_prefix_is_kept(raw: RawServer) -> None:
    # The entity path is appended to the base URL's path, never resolved against it.
    entities = {"good": {"key": "ssn", "path": "/good/{key}", "fields": ["ssn"]}}
    conn = build_connector(rest_config(raw.url + "/rest", entities=entities))
    try:
        assert (await conn.fetch("good", KEY, ["ssn"])).record == {"ssn": KEY}
    finally:
        await conn.aclose()
    assert raw.requests[0].target == f"/rest/good/{KEY}"


def test_connector_built_outside_a_loop_serves_calls_from_it(hostile_url: str) -> None:
    cfg = rest_config(
        hostile_url,
        entities={"good": {"key": "ssn", "path": "/rest/good/{key}", "fields": ["ssn"]}},
    )
    conn = build_connector(cfg)  # no running loop here, as in the gateway's binding registry

    async def fetch_then_close() -> str:
        try:
            return str((await conn.fetch("good", KEY, ["ssn"])).record["ssn"])
        finally:
            await conn.aclose()

    assert asyncio.run(fetch_then_close()) == KEY


# The first loop's pool cannot be closed once its loop is gone; it is left to the collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_later_event_loop_gets_a_fresh_pool_not_dead_sockets(hostile_url: str) -> None:
    cfg = rest_config(
        hostile_url,
        entities={"good": {"key": "ssn", "path": "/rest/good/{key}", "fields": ["ssn"]}},
    )
    conn = build_connector(cfg)

    async def fetch() -> str:
        return str((await conn.fetch("good", KEY, ["ssn"])).record["ssn"])

    async def fetch_then_close() -> str:
        try:
            return await fetch()
        finally:
            await conn.aclose()

    assert asyncio.run(fetch()) == KEY
    assert asyncio.run(fetch_then_close()) == KEY
    gc.collect()


async def test_closed_connector_refuses_calls_instead_of_reopening(raw: RawServer) -> None:
    conn = build_connector(rest_config(raw.url))
    await conn.fetch("good", KEY, ["ssn"])
    await conn.aclose()
    assert await code_of(conn, "good") == "connector_unavailable"
    assert raw.modes() == ["good"]
