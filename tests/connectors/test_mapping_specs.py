"""Mapping specs as a whole: errors caught at compile time, target schemas, directions.

The sample department specs are run over every record their department holds
and validated against the canonical schemas; the canonical → consumer
direction is run on the welfare office's own schema; and the mapping code is
checked to hold no eval and no network access.
"""

from __future__ import annotations

import ast
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from connectors.interface import MappingError
from connectors.mapping import compile_mapping, load_mapping
from connectors.mapping.canonical import CANONICAL_DIR, canonical_models, classification_of
from examples.launch import EXAMPLES, mapping_path

OPEN: dict[str, Any] = {"type": "object"}


def spec(fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "spec": "accord-mapping/1",
        "source": {"system": "dept", "entity": "thing"},
        "target": {"model": "person@1"},
        "fields": fields,
        **extra,
    }


def run(fields: dict[str, Any], record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return compile_mapping(spec(fields, **extra), OPEN).map(record)


# --------------------------------------------------------------------------- spec errors


@pytest.mark.parametrize(
    ("fields", "extra", "mentions"),
    [
        ({"a": {"from": "x", "steps": ["eval"]}}, {}, "fields/a"),
        ({"a": {"from": "x", "const": 1}}, {}, "fields/a"),
        ({"a": {"const": 1, "steps": ["upper"]}}, {}, "fields/a"),
        ({"a": {"from": "x; import os"}}, {}, "fields/a"),
        ({"a": {"from": "x", "steps": [{"jq": ".foo"}]}}, {}, "fields/a"),
        ({"a": {"from": "x", "when": {"field": "y"}}}, {}, "fields/a"),
        ({"a": {"from": "x", "steps": [{"lookup": "nope"}]}}, {}, "a: unknown code list"),
        ({"9bad": {"from": "x"}}, {}, "fields"),
        ({}, {}, "fields"),
        ({"a": {"from": "x"}}, {"script": "rm -rf /"}, "(root)"),
        ({"a": {"from": "x"}}, {"target": {"model": "Person"}}, "target"),
    ],
)
def test_invalid_spec_errors_name_where(
    fields: dict[str, Any], extra: dict[str, Any], mentions: str
) -> None:
    with pytest.raises(MappingError) as err:
        compile_mapping(spec(fields, **extra), OPEN)
    assert mentions in err.value.detail


def test_target_field_not_in_the_canonical_model_is_a_compile_error() -> None:
    with pytest.raises(MappingError) as err:
        compile_mapping(spec({"person_id": {"from": "a"}, "shoe_size": {"from": "b"}}))
    assert err.value.detail == "shoe_size: person@1 has no field 'shoe_size'"


def test_target_that_is_both_a_value_and_an_object_is_a_compile_error() -> None:
    with pytest.raises(MappingError) as err:
        compile_mapping(spec({"addr": {"const": 1}, "addr.city": {"from": "c"}}), OPEN)
    assert err.value.detail == "addr.city: target clashes with 'addr'"


def test_each_nesting_is_bounded() -> None:
    inner: dict[str, Any] = {"v": {"from": "v"}}
    for _ in range(4):
        inner = {"l": {"each": {"from": "l", "fields": inner}}}
    with pytest.raises(MappingError) as err:
        compile_mapping(spec(inner), OPEN)
    assert "nests too deep" in err.value.detail


def test_mapping_file_that_is_not_yaml_is_a_mapping_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.mapping.yaml"
    bad.write_text("spec: [unclosed", encoding="utf-8")
    with pytest.raises(MappingError):
        load_mapping(bad)


# --------------------------------------------------------------------------- target schema


def test_output_is_validated_against_the_canonical_schema() -> None:
    m = compile_mapping(spec({"person_id": {"from": "id"}, "address_postcode": {"from": "pc"}}))
    with pytest.raises(MappingError) as err:
        m.map({"id": "12345678901", "pc": "not a postcode"})
    assert "address_postcode" in err.value.detail
    assert "not a postcode" not in err.value.detail
    with pytest.raises(MappingError):
        m.map({"pc": "1012 AB"})  # person_id is required by person@1
    assert m.map({"pc": "1012 AB"}, partial=True) == {"address_postcode": "1012 AB"}


def test_required_source_fields_for_push_down() -> None:
    m = load_mapping(mapping_path("civil_registry", "citizen"))
    assert m.required_source_fields(["given_name", "address_city"]) == ("name", "residence")
    with pytest.raises(MappingError):
        m.required_source_fields(["shoe_size"])


def test_every_canonical_model_has_labels_on_every_field() -> None:
    models = canonical_models()
    for needed in ("person@1", "address@1", "household@1", "business_registration@1",
                   "tax_status@1", "health_coverage@1", "benefit_claim@1"):  # fmt: skip
        assert needed in models
    for model in models:
        labels = classification_of(model)
        assert labels
        assert all(isinstance(v, dict) and "level" in v for v in labels.values()), model


def _civil_docs(tmp_path: Path) -> list[dict[str, Any]]:
    from examples.civil_registry.app import seed

    seed(tmp_path / "civil.db")
    conn = sqlite3.connect(tmp_path / "civil.db")
    try:
        return [json.loads(r[0]) for r in conn.execute("SELECT doc FROM citizen")]
    finally:
        conn.close()


def _sample_records(department: str, entity: str, tmp_path: Path) -> list[dict[str, Any]]:
    if department == "civil_registry":
        return _civil_docs(tmp_path)
    if department == "health_insurer":
        from examples.health_insurer.db import rows

        return [dict(r) for r in rows()]
    if department == "welfare_office":
        from examples.welfare_office.export import rows as welfare_rows

        return welfare_rows()
    from examples.tax_authority.app import business_records, tax_records

    return list((tax_records() if entity == "tax_status" else business_records()).values())


@pytest.mark.parametrize(
    ("department", "entity"),
    [("civil_registry", "citizen"), ("health_insurer", "member_cover"),
     ("tax_authority", "tax_status"), ("tax_authority", "business"),
     ("welfare_office", "claim")],
)  # fmt: skip
def test_sample_specs_map_every_sample_record(department: str, entity: str, tmp_path: Path) -> None:
    m = load_mapping(mapping_path(department, entity))
    records = _sample_records(department, entity, tmp_path)
    assert len(records) > 20
    outputs = [m.map(r) for r in records]  # validated against the canonical schema
    assert all(set(o) <= set(m.target_fields) for o in outputs)


# --------------------------------------------------------------------------- consumer direction

CONSUMER = EXAMPLES / "welfare_office" / "person.consumer.mapping.yaml"


def test_canonical_to_consumer_schema(tmp_path: Path) -> None:
    to_canonical = load_mapping(mapping_path("civil_registry", "citizen"))
    to_consumer = load_mapping(CONSUMER)
    assert to_consumer.direction == "canonical_to_consumer"
    assert to_consumer.canonical_model == "person@1"
    assert to_consumer.target_model == "welfare_office.client@1"
    person = to_canonical.map(_civil_docs(tmp_path)[0])
    client = to_consumer.map(person)
    assert client["CLIENT_ID"] == person["person_id"]
    assert client["SURNAME"] == person["family_name"].upper()
    y, mth, d = person["birth_date"].split("-")
    assert client["BIRTH_DATE"] == f"{d}-{mth}-{y}"
    assert client["SEX"] in {"V", "M", "X"}
    assert not set(client) & set(person)  # every name is the consumer's own


def test_consumer_mapping_of_a_released_subset() -> None:
    to_consumer = load_mapping(CONSUMER)
    released = {"person_id": "ps1_abc", "address_city": "Eastmoor"}
    assert to_consumer.map(released, partial=True) == {
        "CLIENT_ID": "ps1_abc",
        "ADDRESS_LINE": "Eastmoor",
        "CITY": "EASTMOOR",
    }


def test_consumer_output_is_validated_against_the_consumer_schema() -> None:
    to_consumer = load_mapping(CONSUMER)
    with pytest.raises(MappingError) as err:
        to_consumer.map({"person_id": "1", "household_id": "H" * 100})
    assert "HOUSEHOLD_REF" in err.value.detail


def test_consumer_spec_reading_a_field_canonical_does_not_have_is_refused(tmp_path: Path) -> None:
    doc = {
        "spec": "accord-mapping/1",
        "source": {"model": "person@1"},
        "target": {"system": "w", "entity": "c", "schema": "c.schema.json"},
        "fields": {"ID": {"from": "person_id"}, "SHOE": {"from": "shoe_size"}},
    }
    (tmp_path / "c.schema.json").write_text(json.dumps({"type": "object"}), encoding="utf-8")
    with pytest.raises(MappingError) as err:
        compile_mapping(doc, base_dir=tmp_path)
    assert err.value.detail == "SHOE: person@1 has no field 'shoe_size'"


@pytest.mark.parametrize("schema", ["../../etc/passwd.json", "/etc/x.json", "http://x/s.json"])
def test_consumer_schema_cannot_be_fetched_from_elsewhere(schema: str, tmp_path: Path) -> None:
    doc = {
        "spec": "accord-mapping/1",
        "source": {"model": "person@1"},
        "target": {"system": "w", "entity": "c", "schema": schema},
        "fields": {"ID": {"from": "person_id"}},
    }
    with pytest.raises(MappingError) as err:
        compile_mapping(doc, base_dir=tmp_path)
    assert "target" in err.value.detail


# --------------------------------------------------------------------------- no code, no network


@pytest.mark.parametrize(
    "text", ["{{7*7}}", "$ENV.HOME", "__import__('os').system('id')", "${HOME}", "env.PATH"]
)
def test_spec_strings_are_data_never_code(text: str) -> None:
    f = {"a": {"const": text}, "b": {"from": "v", "default": text}}
    assert run(f, {}) == {"a": text, "b": text}


def test_mapping_modules_hold_no_eval_and_no_network() -> None:
    forbidden_calls = {"eval", "exec", "compile", "__import__", "getattr", "open"}
    forbidden_modules = {"socket", "httpx", "urllib", "requests", "subprocess", "os", "importlib"}
    for path in (Path(CANONICAL_DIR).parents[1] / "connectors" / "mapping").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in forbidden_calls, f"{path.name}: {node.func.id}()"
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & forbidden_modules
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in forbidden_modules, path.name
