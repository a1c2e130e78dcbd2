"""The jsonschema_rs pre-check gives jsonschema's answer, or leaves the question to it.

Every shipped mapping must get the pre-check, and on generated outputs (missing,
extra, null, mistyped and nested fields, values on and just off each pattern,
format and bound) it must accept exactly what jsonschema accepts, in full and in
partial mode, while ``validate`` keeps jsonschema's message for a rejection.
Schemas outside the rule (``required`` under a combinator, references leaving
the document) and a missing ``jsonschema_rs`` leave the mapping on jsonschema.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import sqlite3
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.interface import MappingError
from connectors.mapping import CompiledMapping, compile_mapping, load_mapping
from connectors.mapping.standard_pattern import Validator
from examples.launch import EXAMPLES

SHIPPED = sorted(EXAMPLES.glob("*/*.mapping.yaml"))
EXACT = 2**53

# --------------------------------------------------------------------------- the oracle


def verdict(m: CompiledMapping, out: Any, partial: bool) -> str | None:
    """What ``validate`` answered before the pre-check existed: ``None`` or the message."""
    assert m.validator is not None
    for error in m.validator.iter_errors(out):
        if partial and error.validator == "required":
            continue
        where = "/".join(str(p) for p in error.absolute_path) or "(record)"
        return f"{m.target_model} output invalid at {where}: {error.validator} check failed"
    return None


def target_schema(m: CompiledMapping) -> dict[str, Any]:
    assert m.validator is not None and isinstance(m.validator.schema, Mapping)
    return dict(m.validator.schema)


def assert_agrees(m: CompiledMapping, out: Any, *, plain: bool) -> None:
    """Sound always; for plain JSON also complete, so the fast answer is really used."""
    fast = m._fast
    assert fast is not None
    for partial in (False, True):
        expected = verdict(m, out, partial)
        accepted = fast.accepts(out, partial=partial)
        if accepted:
            assert expected is None, (out, partial)
        if plain:
            assert accepted == (expected is None), (out, partial, expected)
        if expected is None:
            m.validate(out, partial=partial)
        else:
            with pytest.raises(MappingError) as err:
                m.validate(out, partial=partial)
            assert err.value.detail == expected


# --------------------------------------------------------------------------- values from a schema

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-EXACT, EXACT), st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
DATES = st.sampled_from(
    ["2024-02-29", "2023-02-29", "2024-2-01", "20240201", "2024-02-01\n", "٢٠٢٤-٠١-٠١",
     "2024-02-01T00:00:00Z"]
)  # fmt: skip
DATE_TIMES = st.sampled_from(
    ["2020-01-01t00:00:00z", "2020-06-30T23:59:60Z", "2020-01-01T00:00:00",
     "2020-01-01T24:00:00Z", "2020-01-01 00:00:00+00:00", "2020-01-01T00:00:00.123456789+05:30",
     "2020-01-01T00:00:00-00:00"]
)  # fmt: skip
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))


def _near(text: str) -> st.SearchStrategy[str]:
    """``text`` itself and strings one edit away (a final newline, which ``$`` refuses)."""
    return st.sampled_from(
        [text, text + "\n", text[:-1], text + "0", text.lower(), text.replace("1", "١")]
    )


def values(schema: Any, root: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values on and just off what ``schema`` allows; any JSON where it names no shape."""
    if not isinstance(schema, dict) or depth > 3:
        return JSON
    options: list[st.SearchStrategy[Any]] = []
    ref = schema.get("$ref")
    if ref == "#":
        options.append(records(root, root, depth + 1))
    elif isinstance(ref, str):
        options.append(values(root["$defs"][ref.removeprefix("#/$defs/")], root, depth + 1))
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    if "pattern" in schema:
        options.append(st.from_regex(str(schema["pattern"]), fullmatch=True).flatmap(_near))
    if schema.get("format") == "date":
        options += [st.dates().map(dt.date.isoformat), DATES]
    if schema.get("format") == "date-time":
        options += [st.datetimes(timezones=OFFSETS).map(dt.datetime.isoformat), DATE_TIMES]
    if "maxLength" in schema or "minLength" in schema:
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10)
        options.append(st.text(min_size=max(0, low - 1), max_size=high + 2))
    if schema.get("type") == "integer":
        low, high = schema.get("minimum", -100), schema.get("maximum", 100)
        ints = st.integers(low - 2, high + 2)
        options += [ints, ints.map(float), st.floats(low - 2, high + 2)]
    if schema.get("type") == "boolean":
        options.append(st.booleans())
    if "properties" in schema:
        options.append(records(schema, root, depth + 1))
    if isinstance(schema.get("items"), dict):
        most = schema.get("maxItems", 3)
        item = values(schema["items"], root, depth + 1)
        options += [st.lists(item, max_size=3), st.lists(item, min_size=most, max_size=most + 1)]
    return st.one_of(options) if options else JSON


def records(
    schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0
) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the fields, on or near their shape; sometimes any JSON in one or an extra."""
    props = schema["properties"]
    near = st.fixed_dictionaries(
        {}, optional={name: values(sub, root or schema, depth) for name, sub in props.items()}
    )
    junk = st.dictionaries(st.sampled_from([*props, "extra", "_id"]), JSON, max_size=2)
    return st.tuples(near, st.just({}) | junk).map(lambda pair: {**pair[0], **pair[1]})


class Code(enum.IntEnum):
    ONE = 1


class Text(str):
    __slots__ = ()


# values jsonschema_rs reads differently from jsonschema (a tuple is an array to it, a
# Decimal an integer) or not at all; each shipped integer range and array takes one of them
EXOTIC = st.sampled_from(
    [(1, 2), ("a",), ({"person_id": "12345678901", "role": "head"},), Decimal(1), Decimal(2000),
     Decimal("1.50"), dt.date(2020, 1, 1), 2**64, -(2**60), float("nan"), float("inf"), "\ud800",
     Text("12345678901"), Code.ONE, {1: "a"}, b"x", [(1,)], {"a": Decimal(1)}]
)  # fmt: skip


def with_exotic(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(records(schema), st.sampled_from(sorted(schema["properties"])), EXOTIC).map(
        lambda t: {**t[0], t[1]: t[2]}
    )


# --------------------------------------------------------------------------- shipped mappings


@pytest.fixture(scope="module", params=SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def spec_path(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(scope="module")
def shipped(spec_path: Path) -> CompiledMapping:
    return load_mapping(spec_path)


def test_every_shipped_mapping_gets_the_fast_check(shipped: CompiledMapping) -> None:
    assert shipped._fast is not None, shipped.target_model


FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(data=st.data())
def test_shipped_outputs_answered_as_jsonschema_does(
    shipped: CompiledMapping, data: st.DataObject
) -> None:
    assert_agrees(shipped, data.draw(records(target_schema(shipped))), plain=True)


@FAST
@given(data=st.data())
def test_exotic_values_are_left_to_jsonschema(
    shipped: CompiledMapping, data: st.DataObject
) -> None:
    out = data.draw(with_exotic(target_schema(shipped)))
    assert_agrees(shipped, out, plain=False)


def _department_records(spec: Path, tmp: Path) -> list[dict[str, Any]]:
    """What the example department behind ``spec`` holds (canonical persons for a consumer)."""
    entity = spec.name.removesuffix(".mapping.yaml")
    if spec.parent.name == "civil_registry":
        from examples.civil_registry.app import seed

        seed(tmp / "civil.db")
        conn = sqlite3.connect(tmp / "civil.db")
        try:
            return [json.loads(r[0]) for r in conn.execute(f"SELECT doc FROM {entity}")]
        finally:
            conn.close()
    if spec.parent.name == "health_insurer":
        from examples.health_insurer.db import rows

        return [dict(r) for r in rows()]
    if entity == "claim":
        from examples.welfare_office.export import rows as claims

        return [dict(r) for r in claims()]
    if entity == "person.consumer":
        citizen = load_mapping(EXAMPLES / "civil_registry" / "citizen.mapping.yaml")
        civil = _department_records(EXAMPLES / "civil_registry" / "citizen.mapping.yaml", tmp)
        return [citizen.map(r) for r in civil]
    from examples.tax_authority.app import business_records, tax_records

    return list((tax_records() if entity == "tax_status" else business_records()).values())


@pytest.fixture(scope="module")
def department(spec_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _department_records(spec_path, tmp_path_factory.mktemp("department"))


def test_every_department_record_takes_the_fast_path(
    shipped: CompiledMapping, department: list[dict[str, Any]]
) -> None:
    assert len(department) > 20
    for record in department:
        out = shipped.map(record)
        assert shipped._fast is not None
        assert shipped._fast.accepts(out, partial=False)
        assert shipped._fast.accepts(out, partial=True)


DROP = object()


@FAST
@given(data=st.data())
def test_damaged_department_records_answered_as_jsonschema_does(
    shipped: CompiledMapping, department: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Up to three source fields dropped, nulled or replaced by any JSON, then mapped."""
    record = dict(data.draw(st.sampled_from(department)))
    for key in data.draw(st.lists(st.sampled_from(sorted(record)), max_size=3, unique=True)):
        value = data.draw(st.just(DROP) | JSON)
        if value is DROP:
            del record[key]
        else:
            record[key] = value
    try:
        out = shipped.map_unvalidated(record)
    except MappingError:
        return
    assert_agrees(shipped, out, plain=True)


def test_leap_second_date_time_answered_as_jsonschema_does() -> None:
    """Rust's own date-time check takes ``23:59:60``; jsonschema's does not, and it decides."""
    m = load_mapping(EXAMPLES / "civil_registry" / "citizen.mapping.yaml")
    out = {"person_id": "12345678901", "registered_at": "2020-06-30T23:59:60Z"}
    assert verdict(m, out, partial=False) is not None
    assert_agrees(m, out, plain=True)
    with pytest.raises(MappingError, match="registered_at: format check failed"):
        m.validate(out)


def test_a_trailing_newline_does_not_match_a_pattern_anchored_by_dollar() -> None:
    """JSON Schema's ``$`` is the end of the string (Python's ``$`` would take a final
    newline): both checks refuse it, and the mapping says which field."""
    m = load_mapping(EXAMPLES / "civil_registry" / "citizen.mapping.yaml")
    assert_agrees(m, {"person_id": "12345678901\n"}, plain=True)
    assert m._fast is not None
    assert not m._fast.accepts({"person_id": "12345678901\n"}, partial=False)
    with pytest.raises(MappingError, match="person_id: pattern check failed"):
        m.map({"ssn": "12345678901\n"})


MEMBER = {"person_id": "12345678901", "role": "head"}


@pytest.mark.parametrize(
    ("spec", "out"),
    [
        ("tax_authority/tax_status",
         {"person_id": "12345678901", "last_assessment_year": Decimal(2000)}),
        ("civil_registry/household", {"household_id": "HH000001", "members": (MEMBER,)}),
        ("civil_registry/household", {"household_id": "HH000001", "members": [MEMBER, (1,)]}),
    ],
    ids=["decimal-integer", "tuple-array", "nested-tuple"],
)  # fmt: skip
def test_a_tuple_or_decimal_is_judged_by_jsonschema(spec: str, out: dict[str, Any]) -> None:
    """jsonschema_rs takes a tuple for an array and ``Decimal(2000)`` for an integer; jsonschema
    does not, so such a record must never get the fast "valid"."""
    m = load_mapping(EXAMPLES / f"{spec}.mapping.yaml")
    assert verdict(m, out, partial=False) is not None
    assert_agrees(m, out, plain=False)


# --------------------------------------------------------------------------- schemas and the rule


def _mapping(schema: dict[str, Any], *targets: str) -> CompiledMapping:
    doc = {
        "spec": "accord-mapping/1",
        "source": {"system": "dept", "entity": "thing"},
        "target": {"model": "thing@1"},
        "fields": {t: {"from": t} for t in targets},
    }
    return compile_mapping(doc, schema)


NESTED: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:accord:test:nested:1",
    "$defs": {
        "member": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]{3}$"},
                "next": {"$ref": "#"},
            },
        }
    },
    "type": "object",
    "additionalProperties": False,
    "required": ["id"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "lead": {"$ref": "#/$defs/member"},
        "members": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/member"}},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"format": "date"}]},
        "tags": {"type": "object", "additionalProperties": {"type": "object", "required": ["k"]}},
        "both": {"allOf": [{"required": ["a"]}, {"properties": {"a": {"enum": [1, "1"]}}}]},
    },
}


def test_required_under_plain_applicators_keeps_the_fast_check() -> None:
    assert _mapping(NESTED, "id")._fast is not None


@FAST
@given(out=records(NESTED))
def test_nested_required_answered_as_jsonschema_does(out: dict[str, Any]) -> None:
    assert_agrees(_mapping(NESTED, "id"), out, plain=True)


def test_partial_ignores_a_missing_field_deep_inside() -> None:
    m = _mapping(NESTED, "id")
    out: dict[str, Any] = {"lead": {"next": {"members": [{}]}}}
    assert m._fast is not None and m._fast.accepts(out, partial=True)
    m.validate(out, partial=True)
    with pytest.raises(MappingError, match=r"\(record\): required check failed"):
        m.validate(out)


ANY_OF: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
    "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
}


def test_required_inside_any_of_stays_a_failure_in_partial_mode() -> None:
    """Deleting ``required`` would accept ``{}``; jsonschema reports ``anyOf`` and rejects it."""
    stripped = {**ANY_OF, "anyOf": [{}, {}]}
    assert jsonschema.Draft202012Validator(stripped).is_valid({})  # the trap
    m = _mapping(ANY_OF, "a", "b")
    assert m._fast is None
    with pytest.raises(MappingError, match=r"\(record\): anyOf check failed"):
        m.map({}, partial=True)
    assert m.map({"b": "x"}, partial=True) == {"b": "x"}


@pytest.mark.parametrize(
    "extra",
    [
        {"oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
        {"not": {"required": ["a"]}},
        {"if": {"required": ["a"]}, "then": {"required": ["b"]}},
        {"properties": {"l": {"contains": {"required": ["a"]}}}},
        {"dependentSchemas": {"a": {"required": ["b"]}}},
        {"patternProperties": {"^a": {"type": "string"}}},
        {"unevaluatedProperties": False},
        {"$ref": "urn:accord:schema:canonical:address:1"},
        {"properties": {"a": {"type": "string"}, "b": {"$ref": "#/properties/a"}}},
        {"properties": {"a": {"$defs": {"x": {}}, "$ref": "#/properties/a/$defs/x"}}},
        {"properties": {"a": {"$id": "urn:other"}}},
        {"$schema": "http://json-schema.org/draft-07/schema#"},
    ],
    ids=lambda e: next(iter(e)),
)
def test_schemas_outside_the_rule_stay_on_jsonschema(extra: dict[str, Any]) -> None:
    assert _mapping({"type": "object", **extra}, "a")._fast is None


def test_without_jsonschema_rs_every_answer_comes_from_jsonschema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema_rs", None)  # import now raises ImportError
    m = load_mapping(EXAMPLES / "civil_registry" / "citizen.mapping.yaml")
    assert m._fast is None
    assert m.map({"ssn": "12345678901"}) == {"person_id": "12345678901"}
    with pytest.raises(MappingError, match="person_id: pattern check failed"):
        m.map({"ssn": "123"})
    with pytest.raises(MappingError, match=r"\(record\): required check failed"):
        m.validate({"given_name": "Ada"})
    m.validate({"given_name": "Ada"}, partial=True)


def test_a_valid_record_never_reaches_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the pre-check: jsonschema runs only for a record it turns down."""
    m = load_mapping(EXAMPLES / "civil_registry" / "citizen.mapping.yaml")
    calls: list[Any] = []
    real = Validator.iter_errors

    def counted(self: jsonschema.Draft202012Validator, instance: Any) -> Any:
        calls.append(instance)
        return real(self, instance)

    monkeypatch.setattr(Validator, "iter_errors", counted)
    m.map({"ssn": "12345678901", "dob": "01/02/1990"})
    m.validate({"given_name": "Ada"}, partial=True)
    assert calls == []
    with pytest.raises(MappingError, match="person_id: pattern check failed"):
        m.map({"ssn": "123"})
    assert calls == [{"person_id": "123"}]
