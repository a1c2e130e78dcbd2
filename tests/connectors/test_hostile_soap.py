"""A misbehaving SOAP provider on 127.0.0.1: XXE, entity bombs, floods, slow and odd replies.

The connector is the real tax-authority connector (its own WSDL) pointed at
``hostile_server``'s ``/soap/<mode>``. Each case must end in a stable code,
within the connector's own timeouts and byte cap, with no record returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from connectors.config import build_connector
from connectors.interface import ConnectorError, FetchResult, MappingError
from connectors.mapping import load_mapping
from connectors.soap import SoapConnector, hardened_parser
from examples.launch import mapping_path
from tests.connectors.conftest import WSDL, hits, reset

FIELDS = [
    "TaxpayerId",
    "FullName",
    "FilingStatus",
    "Residency",
    "LastAssessmentYear",
    "AssessedIncome",
    "Compliance",
    "LastFilingDate",
]
KEY = "12345678901"


def config(url: str, mode: str, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "kind": "soap",
        "name": "hostile_tax",
        "wsdl": str(WSDL),
        "address": f"{url}/soap/{mode}",
        "timeouts": {"connect": 1.0, "read": 0.5, "total": 1.5},
        "retries": {"attempts": 3, "backoff": 0.01, "max_wait": 0.5},
        "breaker": {"failures": 100, "reset_after": 60},
        "max_response_bytes": 256 * 1024,
        "entities": {
            "tax_status": {"operation": "GetTaxStatus", "key": "TaxpayerId", "fields": FIELDS},
            "tax_status_write": {
                "operation": "GetTaxStatus",
                "key": "TaxpayerId",
                "fields": FIELDS,
                "idempotent": False,
            },
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture
async def soap(hostile_url: str) -> AsyncIterator[Callable[..., SoapConnector]]:
    reset(hostile_url)
    made: list[SoapConnector] = []

    def make(mode: str, **over: Any) -> SoapConnector:
        conn = build_connector(config(hostile_url, mode, **over))
        assert isinstance(conn, SoapConnector)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        await conn.aclose()


async def code_of(conn: SoapConnector, entity: str = "tax_status") -> str:
    with pytest.raises(ConnectorError) as err:
        await conn.fetch(entity, KEY, FIELDS)
    return err.value.code


async def test_good_reply_passes(soap: Callable[..., SoapConnector]) -> None:
    result = await soap("good").fetch("tax_status", KEY, FIELDS)
    assert isinstance(result, FetchResult)
    assert result.record["FilingStatus"] == "S"
    assert result.record["AssessedIncome"] == "10.00"


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("xxe", "unsafe_content"),
        ("xxe_late", "unsafe_content"),
        ("param_entity", "unsafe_content"),
        ("bomb", "unsafe_content"),
        ("utf16_bomb", "unsafe_content"),
        ("huge", "response_too_large"),
        ("endless", "response_too_large"),
        ("slow", "connector_timeout"),
        ("trickle", "connector_timeout"),
        ("html", "connector_bad_response"),
        ("json", "connector_bad_response"),
        ("garbage", "connector_bad_response"),
        ("wrongshape", "connector_bad_response"),
        ("fault", "connector_bad_response"),
        ("notfound", "not_found"),
        ("unavailable", "connector_unavailable"),
    ],
)
async def test_hostile_reply_maps_to_stable_code(
    soap: Callable[..., SoapConnector], mode: str, code: str
) -> None:
    assert await code_of(soap(mode)) == code


async def test_xxe_never_reads_the_local_file(soap: Callable[..., SoapConnector]) -> None:
    with pytest.raises(ConnectorError) as err:
        await soap("xxe").fetch("tax_status", KEY, FIELDS)
    assert "root:" not in err.value.detail
    assert "root:" not in repr(err.value.__cause__)


def test_hardened_parser_does_not_expand_entities_even_if_reached() -> None:
    # Defence in depth: even if the byte-level refusal were bypassed, lxml does not expand.
    from lxml import etree

    doc = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">'
        b'<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><d>&x;&b;</d>'
    )
    root = etree.fromstring(doc, hardened_parser())
    text = "".join(root.itertext())
    assert "root:" not in text
    assert "aaaaaaaaaa" not in text


async def test_transient_503_is_retried_for_idempotent_operations(
    soap: Callable[..., SoapConnector], hostile_url: str
) -> None:
    assert await code_of(soap("unavailable")) == "connector_unavailable"
    assert hits(hostile_url)["hits"]["soap_unavailable"] == 3


async def test_non_idempotent_operation_is_never_retried(
    soap: Callable[..., SoapConnector], hostile_url: str
) -> None:
    assert await code_of(soap("unavailable"), "tax_status_write") == "connector_unavailable"
    assert hits(hostile_url)["hits"]["soap_unavailable"] == 1


async def test_soap_fault_is_not_retried(
    soap: Callable[..., SoapConnector], hostile_url: str
) -> None:
    await code_of(soap("fault"))
    assert hits(hostile_url)["hits"]["soap_fault"] == 1


@pytest.mark.parametrize("mode", ["unknown_code"])
async def test_unknown_code_fails_mapping_and_nothing_is_released(
    soap: Callable[..., SoapConnector], mode: str
) -> None:
    mapping = load_mapping(mapping_path("tax_authority", "tax_status"))
    result = await soap(mode).fetch("tax_status", KEY, FIELDS)
    with pytest.raises(MappingError) as err:
        mapping.map(result.record)
    assert err.value.code == "mapping_error"
    assert "filing_status" in err.value.detail
    assert "ZZ" not in err.value.detail


async def test_reply_missing_a_required_element_is_bad_response(
    soap: Callable[..., SoapConnector],
) -> None:
    # The WSDL makes FullName mandatory; zeep in strict mode refuses the reply.
    code = await code_of(soap("missing_element"))
    assert code in ("connector_bad_response",)


async def test_network_wsdl_imports_are_refused(tmp_path: Any) -> None:
    wsdl = WSDL.read_text(encoding="utf-8").replace(
        "<wsdl:types>",
        '<wsdl:import namespace="urn:x" location="http://169.254.169.254/evil.wsdl"/><wsdl:types>',
        1,
    )
    path = tmp_path / "evil.wsdl"
    path.write_text(wsdl, encoding="utf-8")
    with pytest.raises(ConnectorError) as err:
        build_connector(config("http://127.0.0.1:9", "good", wsdl=str(path)))
    assert err.value.code == "connector_config_invalid"


async def test_result_path_not_in_the_wsdl_is_a_config_error_on_discover() -> None:
    cfg = config("http://127.0.0.1:9", "good")
    cfg["entities"]["tax_status"]["result_path"] = "NoSuchElement"
    conn = build_connector(cfg)
    try:
        with pytest.raises(ConnectorError) as err:
            await conn.discover()
    finally:
        await conn.aclose()
    assert err.value.code == "connector_config_invalid"
