"""``CompiledMapping.map(..., only=...)``: just the rules of the targets asked for run,
so a rule for a target nobody asked for cannot fail the record."""

from __future__ import annotations

import pytest

from connectors.interface import MappingError
from connectors.mapping import compile_mapping

SPEC = {
    "spec": "accord-mapping/1",
    "source": {"system": "s", "entity": "e"},
    "target": {"model": "person@1"},
    "fields": {
        "person_id": {"from": "ssn", "required": True},
        "given_name": {"from": "first"},
        "household_id": {"concat": {"parts": [{"const": "HH"}, {"from": "hh"}]}},
    },
}


def test_unrequested_constant_rule_is_not_run_or_validated() -> None:
    mapping = compile_mapping(SPEC)
    record = {"ssn": "12345678901", "first": "Ada"}  # "hh" was not fetched
    with pytest.raises(MappingError, match="household_id"):
        mapping.map(record, partial=True)
    assert mapping.map(record, partial=True, only=frozenset({"given_name"})) == {
        "given_name": "Ada"
    }


def test_only_still_runs_and_validates_the_targets_asked_for() -> None:
    mapping = compile_mapping(SPEC)
    out = mapping.map(
        {"ssn": "12345678901", "hh": "123456"},
        partial=True,
        only=frozenset({"person_id", "household_id"}),
    )
    assert out == {"person_id": "12345678901", "household_id": "HH123456"}
    with pytest.raises(MappingError, match="household_id"):
        mapping.map({"hh": "12"}, partial=True, only=frozenset({"household_id"}))
    with pytest.raises(MappingError, match="person_id"):
        mapping.map({}, partial=True, only=frozenset({"person_id"}))  # required still holds
