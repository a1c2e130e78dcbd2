"""A target JSON Schema is checked when compiling and never makes the gateway fetch.

Regression for the integrator review's #2: a consumer schema registered with
``PUT /v1/departments/{dept}/mappings/{name}`` was not checked, and its
``$ref: http://127.0.0.1:.../x`` was fetched by jsonschema's automatic remote
retrieval on every exchange (SSRF); ``{"type": "nonsense"}`` and
``{"pattern": "(("}`` were stored and then failed each exchange with 500.
Now every target schema must be valid, its regexes compile, and each ``$ref``
resolves inside it (or to a shipped canonical schema) without any retrieval;
registration answers 422 ``mapping_invalid``. A loopback listener records any
request the gateway makes to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from connectors.interface import MappingError
from connectors.mapping import compile_mapping
from examples.launch import Departments
from examples.synth import people
from gateway.client import AccordClientError
from tests._support.gateway import Gateway, sqlite_gateway
from tests._support.listener import RecordingListener, serving


@pytest.fixture
def listener() -> Iterator[RecordingListener]:
    """Where a remote ``$ref`` points: answers ``{}`` (a valid schema) and remembers."""
    with serving(RecordingListener(status=200, body=b"{}")) as server:
        yield server


def consumer_spec(**fields: Any) -> dict[str, Any]:
    return {
        "spec": "accord-mapping/1",
        "source": {"model": "person@1"},
        "target": {"system": "welfare_office", "entity": "client", "schema": "c.schema.json"},
        "fields": fields or {"ID": {"from": "person_id"}},
    }


def schema(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def refused(target: dict[str, Any]) -> str:
    with pytest.raises(MappingError) as err:
        compile_mapping(consumer_spec(), target)
    assert err.value.code == "mapping_error"
    return err.value.detail


# --------------------------------------------------------------------------- compiler


def test_remote_ref_is_refused_at_compile_time_and_never_fetched(
    listener: RecordingListener,
) -> None:
    detail = refused(schema(ID={"$ref": f"{listener.url}/probe"}))
    assert "does not resolve" in detail and "never fetched" in detail
    assert listener.seen == []


@pytest.mark.parametrize(
    "target",
    [
        {"$id": "BASE/", **schema(ID={"$ref": "x.json"})},  # relative to a remote $id
        schema(ID={"$ref": "BASE/#/$defs/a"}),
        schema(ID={"$dynamicRef": "BASE/probe"}),
        schema(ID={"not": {"$ref": "BASE/probe"}}),
        {**schema(ID={"type": "string"}), "$defs": {"unused": {"$ref": "BASE/probe"}}},
        schema(ID={"$ref": "file:///etc/passwd"}),
        schema(ID={"$ref": "https://json-schema.org/draft/2020-12/schema"}),
        schema(ID={"$ref": "#/$defs/missing"}),
    ],
    ids=["relative-to-remote-id", "remote-pointer", "dynamic-ref", "under-not", "unused-def",
         "file", "metaschema", "missing-pointer"],
)  # fmt: skip
def test_every_reference_outside_the_document_is_refused(
    listener: RecordingListener, target: dict[str, Any]
) -> None:
    target = json.loads(json.dumps(target).replace("BASE", listener.url))
    assert "does not resolve" in refused(target)
    assert listener.seen == []


def test_in_document_and_canonical_references_still_compile(listener: RecordingListener) -> None:
    local = {
        "$id": f"{listener.url}/client.json",  # a remote-looking $id names the document itself
        **schema(ID={"$ref": "#/$defs/id"}, NAME={"$ref": "client.json#/$defs/id"}),
        "$defs": {"id": {"type": "string", "pattern": "^[0-9]+$"}},
    }
    m = compile_mapping(
        consumer_spec(ID={"from": "person_id"}, NAME={"from": "family_name"}), local
    )
    assert m.map({"person_id": "1", "family_name": "2"}) == {"ID": "1", "NAME": "2"}
    with pytest.raises(MappingError, match="ID: pattern check failed"):
        m.map({"person_id": "x"})
    canonical = schema(ID={"$ref": "urn:accord:schema:canonical:person:1#/properties/person_id"})
    m = compile_mapping(consumer_spec(), canonical)
    assert m.map({"person_id": "12345678901"}) == {"ID": "12345678901"}
    with pytest.raises(MappingError, match="pattern check failed"):
        m.map({"person_id": "123"})
    assert listener.seen == []


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (schema(ID={"type": "nonsense"}), "not valid JSON Schema at properties/ID/type"),
        (schema(ID={"type": "string", "pattern": "(("}), "properties/ID/pattern"),
        ({"type": "object", "patternProperties": {"((": {}}}, "patternProperties"),
        (schema(ID={"minLength": -1}), "properties/ID/minLength"),
        ({"type": "object", "required": "ID"}, "required"),
    ],
)
def test_invalid_target_schema_is_refused_at_compile_time(target: Any, words: str) -> None:
    assert words in refused(target)


def test_a_schema_passed_for_a_canonical_target_is_checked_too() -> None:
    spec = {
        "spec": "accord-mapping/1",
        "source": {"system": "dept", "entity": "thing"},
        "target": {"model": "person@1"},
        "fields": {"a": {"from": "x"}},
    }
    with pytest.raises(MappingError, match="not valid JSON Schema"):
        compile_mapping(spec, {"type": "object", "properties": {"a": {"type": "strin"}}})


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def gateway(
    departments: Departments, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-schema-refs")
    with sqlite_gateway(data, departments.env) as gw:
        yield gw


def _put(gw: Gateway, name: str, json_schema: dict[str, Any]) -> httpx.Response:
    body = {"name": name, "mapping": consumer_spec(), "json_schema": json_schema}
    return httpx.put(
        f"{gw.url}/v1/departments/welfare-office/mappings/{name}",
        json=body,
        headers=gw.staff(),
        timeout=30,
    )


def test_registering_a_schema_with_a_remote_ref_is_refused_and_fetches_nothing(
    gateway: Gateway, listener: RecordingListener
) -> None:
    r = _put(gateway, "rv-ssrf", schema(ID={"$ref": f"{listener.url}/SSRF-PROBE"}))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "mapping_invalid"
    # Nothing was stored, and an exchange naming it fetches nothing, whatever it answers.
    engine = sa.create_engine(gateway.env["ACCORD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            stored = conn.exec_driver_sql(
                "SELECT count(*) FROM consumer_mapping WHERE name = 'rv-ssrf'"
            ).scalar()
    finally:
        engine.dispose()
    assert stored == 0
    with pytest.raises(AccordClientError):
        gateway.client("welfare-office").exchange(
            agreement="welfare-person-lookup",
            dataset="person",
            purpose="benefit-eligibility",
            query={"kind": "record", "subject": people()[0].person_id},
            target_schema="rv-ssrf",
        )
    assert listener.seen == []


@pytest.mark.parametrize(
    "json_schema",
    [schema(ID={"type": "nonsense"}), schema(ID={"type": "string", "pattern": "(("})],
    ids=["bad-type", "bad-pattern"],
)
def test_registering_an_invalid_schema_is_refused(
    gateway: Gateway, json_schema: dict[str, Any]
) -> None:
    r = _put(gateway, "rv-invalid", json_schema)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "mapping_invalid"


def test_a_valid_consumer_schema_still_registers(gateway: Gateway) -> None:
    r = _put(gateway, "rv-good", schema(ID={"$ref": "#/$defs/id"}) | {"$defs": {"id": {}}})
    assert r.status_code == 200, r.text
