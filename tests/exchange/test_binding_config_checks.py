"""A dataset binding whose connector can never work is refused when written.

Before, ``PUT /v1/departments/{provider}/datasets/{dataset}`` stored any config
with a known kind and entity, and every exchange then answered 500
``connector_misconfigured``. Now the connector is built from the config when it
is written (placeholders take stand-ins: nothing is read from the gateway's
environment) and the mapping's sources are checked against the entity's fields:
422 ``connector_config_invalid`` naming what is wrong, and nothing stored.
Over HTTP against a running gateway, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from examples.launch import EXAMPLES, Departments
from tests._support.gateway import Gateway
from tests.exchange.conftest import STORES, gateway_on_store

#: (provider, example folder, entity, mapping file, model), as the demo binds them.
KINDS = {
    "rest": ("civil-registry", "civil_registry", "citizen", "citizen", "person@1"),
    "sql": (
        "health-insurer",
        "health_insurer",
        "member_cover",
        "member_cover",
        "health_coverage@1",
    ),
    "soap": ("tax-authority", "tax_authority", "tax_status", "tax_status", "tax_status@1"),
    "csv": ("welfare-office", "welfare_office", "claim", "claim", "benefit_claim@1"),
}


@pytest.fixture(scope="module", params=STORES)
def gw(
    request: pytest.FixtureRequest,
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-bindings")
    with gateway_on_store(request, departments, data) as g:
        yield g


def _binding(kind: str) -> tuple[str, dict[str, Any]]:
    provider, folder, entity, mapping, model = KINDS[kind]
    config = yaml.safe_load((EXAMPLES / folder / "connector.yaml").read_text("utf-8"))
    if kind == "soap":
        config["wsdl"] = str((EXAMPLES / folder / config["wsdl"]).resolve())
    spec = yaml.safe_load((EXAMPLES / folder / f"{mapping}.mapping.yaml").read_text("utf-8"))
    return provider, {
        "dataset_id": f"check-{kind}",
        "model": model,
        "entity": entity,
        "connector": config,
        "mapping": spec,
        "subject_field": "person_id",
    }


def _put(gw: Gateway, provider: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(
        f"{gw.url}/v1/departments/{provider}/datasets/{body['dataset_id']}",
        json=body,
        headers=gw.staff(),
        timeout=30,
    )


def _stored(gw: Gateway, dataset: str) -> bool:
    engine = sa.create_engine(gw.env["ACCORD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT count(*) FROM dataset_binding WHERE dataset_id = :d"),
                {"d": dataset},
            ).scalar_one()
    finally:
        engine.dispose()
    return bool(found)


Change = Callable[[dict[str, Any]], None]


def _connector(**values: Any) -> Change:
    return lambda b: b["connector"].update(values)


def _entity(**values: Any) -> Change:
    def change(b: dict[str, Any]) -> None:
        entity = b["connector"]["entities"][b["entity"]]
        entity.update(values)

    return change


def _misspelt_fields(b: dict[str, Any]) -> None:
    entity = b["connector"]["entities"][b["entity"]]
    entity["feilds"] = entity.pop("fields")


def _without_directory(b: dict[str, Any]) -> None:
    del b["connector"]["directory"]


#: (kind, change, what the refusal must name)
NEVER_WORKS: dict[str, tuple[str, Change, str]] = {
    "csv_without_directory": ("csv", _without_directory, "directory"),
    "zero_total_timeout": ("csv", _connector(timeouts={"total": 0}), "timeouts.total"),
    "negative_total_timeout": ("csv", _connector(timeouts={"total": -1}), "timeouts.total"),
    "word_for_a_timeout": ("csv", _connector(timeouts={"total": "ten"}), "timeouts.total"),
    "zero_byte_cap": ("csv", _connector(max_response_bytes=0), "max_response_bytes"),
    "boolean_attempts": ("csv", _connector(retries={"attempts": True}), "retries.attempts"),
    "fractional_breaker": ("sql", _connector(breaker={"failures": 2.5}), "breaker.failures"),
    "word_for_max_rows": ("sql", _connector(max_rows="many"), "max_rows"),
    "bad_key_pattern": ("csv", _entity(key_pattern="(("), "key_pattern"),
    "misspelt_fields": ("csv", _misspelt_fields, "fields"),
    "mapping_reads_unexposed_field": ("csv", _entity(fields=["CLAIMANT_ID"]), "does not expose"),
    "csv_pattern_leaving_the_folder": ("csv", _entity(pattern="../claims_*.csv"), "pattern"),
    "csv_two_character_delimiter": ("csv", _entity(delimiter=";;"), "delimiter"),
    "rest_path_without_key": ("rest", _entity(path="/api/v2/citizens"), "{key}"),
    "unknown_soap_operation": ("soap", _entity(operation="NoSuchOp"), "NoSuchOp"),
    "rest_base_url_not_http": ("rest", _connector(base_url="ftp://x"), "base_url"),
}


@pytest.mark.parametrize("case", sorted(NEVER_WORKS))
def test_binding_that_can_never_work_is_refused_when_written(gw: Gateway, case: str) -> None:
    kind, change, named = NEVER_WORKS[case]
    provider, body = _binding(kind)
    body = copy.deepcopy(body)
    body["dataset_id"] = f"bad-{case.replace('_', '-')}"[:63]
    change(body)
    r = _put(gw, provider, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "connector_config_invalid", problem
    assert named in problem["detail"], problem["detail"]
    assert not _stored(gw, body["dataset_id"])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_working_bindings_are_still_accepted_with_their_placeholders(
    gw: Gateway, kind: str
) -> None:
    """The demo's configs name ``${VAR}``s without defaults (a database URL, a drop
    folder, a token): their stand-ins build, and the values are read only when used."""
    provider, body = _binding(kind)
    r = _put(gw, provider, body)
    assert r.status_code == 200, r.text
    assert _stored(gw, body["dataset_id"])


def test_a_stand_in_is_never_sent_or_stored(gw: Gateway) -> None:
    """The stored config keeps its placeholders, whatever stood in for them."""
    provider, body = _binding("rest")
    body["connector"]["base_url"] = "${CIVIL_REGISTRY_URL}"
    assert _put(gw, provider, body).status_code == 200
    engine = sa.create_engine(gw.env["ACCORD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT connector FROM dataset_binding WHERE dataset_id = 'check-rest'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert "stand-in" not in str(stored) and "${CIVIL_REGISTRY_URL}" in str(stored)
