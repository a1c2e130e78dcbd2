"""Fetch → canonical mapping → release → consumer mapping, on the real civil registry.

The pieces the exchange flow composes, run end to end against the sample
REST department on loopback: only the source fields the allowed targets need
are fetched, the release applies the agreement's obligations, and the welfare
office's own mapping renames what was released without adding anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from connectors import build_connector
from connectors.interface import MappingError
from connectors.mapping import load_mapping
from examples.launch import EXAMPLES, Departments, launch, mapping_path
from examples.synth import people
from gateway.release import ReleaseContext, apply_release, evaluate_predicate, pseudonym

OBLIGATIONS: dict[str, Any] = {
    "person_id": {"operation": "pseudonymise"},
    "given_name": {"operation": "pass"},
    "family_name": {"operation": "pass"},
    "birth_date": {"operation": "verify_only", "predicates": ["age_over(18)"]},
    "address_city": {"operation": "pass"},
    "address_postcode": {"operation": "generalise", "to": "district"},
}
CTX = ReleaseContext("welfare-person-lookup@1", "welfare-office", b"k" * 32, dt.date(2026, 11, 25))


@pytest.fixture(scope="module")
def civil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Departments]:
    with launch(["civil_registry"], data_dir=tmp_path_factory.mktemp("civil")) as deps:
        yield deps


async def _fetch_canonical(civil: Departments, key: str, targets: list[str]) -> Any:
    mapping = load_mapping(mapping_path("civil_registry", "citizen"))
    conn = build_connector(civil.config("civil_registry"))
    try:
        # Required targets (the subject's id) always come along, as in the exchange flow.
        wanted = sorted({*targets, *mapping.required_targets})
        result = await conn.fetch("citizen", key, mapping.required_source_fields(wanted))
    finally:
        await conn.aclose()
    return result, mapping.map(result.record, partial=True)


async def test_only_the_source_fields_the_targets_need_are_fetched(civil: Departments) -> None:
    person = people()[3]
    result, canonical = await _fetch_canonical(civil, person.person_id, ["address_city"])
    assert result.fields == ("residence", "ssn")
    assert set(result.record) == {"residence", "ssn"}
    # Push-down is per top-level source field: the whole residence comes, the name does not.
    # What leaves is decided by the release step, never by what was fetched.
    assert canonical["address_city"] == person.city
    assert set(canonical) == {"person_id", "address_city", "address_street", "address_postcode"}


async def test_released_record_reaches_the_consumer_in_its_own_schema(
    civil: Departments,
) -> None:
    person = people()[5]
    _, canonical = await _fetch_canonical(civil, person.person_id, list(OBLIGATIONS))
    released = apply_release([canonical], OBLIGATIONS, CTX)[0]
    assert "birth_date" not in released
    assert released["person_id"] == pseudonym(person.person_id, CTX)
    assert released["address_postcode"] == person.postcode.split()[0]

    consumer = load_mapping(EXAMPLES / "welfare_office" / "person.consumer.mapping.yaml")
    client = consumer.map(released, partial=True)
    assert client == {
        "CLIENT_ID": pseudonym(person.person_id, CTX),
        "SURNAME": person.family_name.upper(),
        "FORENAMES": person.given_name,
        "ADDRESS_LINE": f"{person.postcode.split()[0]}, {person.city}",
        "CITY": person.city.upper(),
    }
    assert person.person_id not in str(client)

    adult = evaluate_predicate(canonical, "age_over(18)", OBLIGATIONS, CTX)
    born = person.birth_date
    age = 2026 - born.year - ((born.month, born.day) > (11, 25))
    assert adult is (age >= 18)


async def test_a_record_that_fails_mapping_releases_nothing(civil: Departments) -> None:
    person = people()[7]
    mapping = load_mapping(mapping_path("civil_registry", "citizen"))
    conn = build_connector(civil.config("civil_registry"))
    try:
        result = await conn.fetch("citizen", person.person_id, mapping.required_source_fields())
    finally:
        await conn.aclose()
    broken = {**result.record, "gender": "Q"}  # a code the registry never documented
    released: list[dict[str, Any]] = []
    with pytest.raises(MappingError):
        released = apply_release([mapping.map(broken)], OBLIGATIONS, CTX)
    assert released == []
