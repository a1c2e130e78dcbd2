"""The declarative mapping's closed vocabulary: every transform on its own.

Each test compiles a small spec against an open target schema, so a step is
seen in isolation; errors must name the target field and never the value.
Whole specs, target schemas and directions are in ``test_mapping_specs.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from connectors.interface import MappingError
from connectors.mapping import compile_mapping

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


def fails(fields: dict[str, Any], record: dict[str, Any], **extra: Any) -> str:
    with pytest.raises(MappingError) as err:
        run(fields, record, **extra)
    assert err.value.code == "mapping_error"
    return err.value.detail


# --------------------------------------------------------------------------- vocabulary


def test_rename_and_nested_path() -> None:
    rec = {"a": 1, "n": {"x": {"y": "deep"}}, "l": [{"v": "first"}, {"v": "second"}]}
    out = run({"b": {"from": "a"}, "c": {"from": "n.x.y"}, "d": {"from": "l.1.v"}}, rec)
    assert out == {"b": 1, "c": "deep", "d": "second"}


def test_nested_target_paths_build_objects() -> None:
    out = run({"addr.city": {"from": "c"}, "addr.zip": {"from": "z"}}, {"c": "X", "z": "1"})
    assert out == {"addr": {"city": "X", "zip": "1"}}


def test_unmapped_source_fields_are_dropped() -> None:
    assert run({"b": {"from": "a"}}, {"a": 1, "secret": "s", "other": 2}) == {"b": 1}


def test_missing_path_through_a_scalar_is_just_missing() -> None:
    assert run({"b": {"from": "a.x.y"}}, {"a": "scalar"}) == {}
    assert run({"b": {"from": "l.5"}}, {"l": [1]}) == {}


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [("%d/%m/%Y", "10/12/1815", "1815-12-10"), ("%Y%m%d", 20240229, "2024-02-29"),
     ("%d.%m.%Y", "01.02.2003", "2003-02-01")],
)  # fmt: skip
def test_date_formats(fmt: str, value: Any, expected: str) -> None:
    assert run({"d": {"from": "v", "steps": [{"date": fmt}]}}, {"v": value}) == {"d": expected}


@pytest.mark.parametrize("value", ["2024-02-30", "31/12/2024", "yesterday", True, {"y": 1}])
def test_bad_dates_name_the_field_not_the_value(value: Any) -> None:
    detail = fails({"birth": {"from": "v", "steps": [{"date": "%Y-%m-%d"}]}}, {"v": value})
    assert detail.startswith("birth:")
    assert "yesterday" not in detail


def test_datetime_with_zone_and_naive_as_utc() -> None:
    out = run(
        {
            "a": {"from": "z", "steps": [{"datetime": "%Y-%m-%dT%H:%M:%S%z"}]},
            "b": {
                "from": "n",
                "steps": [{"datetime": {"format": "%Y%m%d %H%M", "naive_as_utc": True}}],
            },
        },
        {"z": "2020-01-01T10:00:00+0200", "n": "20200101 0930"},
    )
    assert out == {"a": "2020-01-01T10:00:00+02:00", "b": "2020-01-01T09:30:00+00:00"}


def test_naive_datetime_without_flag_is_refused() -> None:
    detail = fails({"t": {"from": "n", "steps": [{"datetime": "%Y%m%d"}]}}, {"n": "20200101"})
    assert "time zone" in detail


def test_format_date_writes_the_consumer_format() -> None:
    f = {"d": {"from": "v", "steps": [{"format_date": "%d-%m-%Y"}]}}
    assert run(f, {"v": "2024-02-29"}) == {"d": "29-02-2024"}
    assert fails(f, {"v": "29/02/2024"}).startswith("d: format_date")


def test_lookup_named_and_inline() -> None:
    out = run(
        {
            "sex": {"from": "g", "steps": [{"lookup": "gender"}]},
            "ok": {"from": "s", "steps": [{"lookup": {"1": True, "2": False}}]},
        },
        {"g": "F", "s": 1},
        codelists={"gender": {"F": "female", "M": "male"}},
    )
    assert out == {"sex": "female", "ok": True}


@pytest.mark.parametrize("code", ["Q", "f", "", " F", "__class__", True])
def test_unknown_code_is_a_mapping_error(code: Any) -> None:
    f = {"sex": {"from": "g", "steps": [{"lookup": {"F": "female"}}]}, "x": {"const": 1}}
    if code == "":
        assert run(f, {"g": code}) == {"x": 1}  # empty is "missing", not a code
        return
    detail = fails(f, {"g": code})
    assert detail.startswith("sex: lookup")
    assert "unknown code" in detail or "booleans" in detail


@pytest.mark.parametrize(("value", "expected"), [("42", 42), (" 7 ", 7), (3, 3), ("-1", -1)])
def test_int_cast(value: Any, expected: int) -> None:
    assert run({"n": {"from": "v", "steps": ["int"]}}, {"v": value}) == {"n": expected}


@pytest.mark.parametrize("value", ["4.5", "x", True, "1e3"])
def test_int_cast_refuses_non_integers(value: Any) -> None:
    assert fails({"n": {"from": "v", "steps": ["int"]}}, {"v": value}).startswith("n: int")


@pytest.mark.parametrize(
    ("step", "value", "expected"),
    [
        ("decimal", "12.5", "12.5"),
        ({"decimal": {"places": 2}}, "12.5", "12.50"),
        ({"decimal": {"shift": -2, "places": 2}}, 12345, "123.45"),
        ({"decimal": {"places": 2, "decimal_separator": ",", "group_separator": "."}},
         "1.234,5", "1234.50"),
        ({"decimal": {"places": 2}}, 0.1, "0.10"),
    ],
)  # fmt: skip
def test_decimal_cast(step: Any, value: Any, expected: str) -> None:
    assert run({"m": {"from": "v", "steps": [step]}}, {"v": value}) == {"m": expected}


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1,2", "abc", True])
def test_decimal_cast_refuses_non_numbers(value: Any) -> None:
    f = {"m": {"from": "v", "steps": [{"decimal": {"places": 2}}]}}
    assert fails(f, {"v": value}).startswith("m: decimal")


def test_concat_skips_missing_parts() -> None:
    f = {
        "line": {
            "concat": {
                "separator": ", ",
                "parts": [{"from": "a"}, {"const": "X"}, {"from": "b"}, {"from": "c"}],
            }
        }
    }
    assert run(f, {"a": "1", "c": 3}) == {"line": "1, X, 3"}


def test_split_picks_a_part() -> None:
    f = {
        "family": {"from": "n", "steps": [{"split": {"separator": ",", "index": 0}}, "lower"]},
        "given": {"from": "n", "steps": [{"split": {"separator": ",", "index": -1}}]},
    }
    assert run(f, {"n": "LOVELACE, Ada"}) == {"family": "lovelace", "given": "Ada"}
    f2 = {"x": {"from": "n", "steps": [{"split": {"separator": ";", "index": 3}}]}}
    assert fails(f2, {"n": "a;b"}).startswith("x: split")


def test_default_and_const() -> None:
    f = {"a": {"from": "x", "default": "unknown"}, "b": {"const": "fixed"}}
    assert run(f, {}) == {"a": "unknown", "b": "fixed"}
    assert run(f, {"x": None}) == {"a": "unknown", "b": "fixed"}
    assert run(f, {"x": "v"}) == {"a": "v", "b": "fixed"}


def test_upper_lower_strip_string() -> None:
    f = {
        "u": {"from": "v", "steps": ["strip", "upper"]},
        "l": {"from": "v", "steps": ["lower"]},
        "s": {"from": "n", "steps": ["string"]},
    }
    assert run(f, {"v": " Ab ", "n": 5}) == {"u": "AB", "l": " ab ", "s": "5"}
    assert fails({"u": {"from": "v", "steps": ["upper"]}}, {"v": [1]}).startswith("u: upper")


@pytest.mark.parametrize(
    ("cond", "rec", "emitted"),
    [
        ({"field": "k", "equals": "SOLE"}, {"k": "SOLE"}, True),
        ({"field": "k", "equals": "SOLE"}, {"k": "LTD"}, False),
        ({"field": "k", "not_equals": "SOLE"}, {"k": "LTD"}, True),
        ({"field": "k", "in": ["A", "B"]}, {"k": "B"}, True),
        ({"field": "k", "in": ["A", "B"]}, {"k": "C"}, False),
        ({"field": "k", "present": True}, {"k": ""}, False),
        ({"field": "k", "present": False}, {}, True),
    ],
)
def test_when_conditions(cond: dict[str, Any], rec: dict[str, Any], emitted: bool) -> None:
    out = run({"owner": {"from": "o", "when": cond}}, {**rec, "o": "123"})
    assert ("owner" in out) is emitted


def test_each_maps_lists_of_objects() -> None:
    f = {
        "members": {
            "each": {
                "from": "m",
                "fields": {"person_id": {"from": "id"}, "role": {"from": "r", "steps": ["lower"]}},
            }
        }
    }
    rec = {"m": [{"id": "1", "r": "HEAD", "secret": "x"}, {"id": "2", "r": "CHILD"}]}
    assert run(f, rec) == {
        "members": [{"person_id": "1", "role": "head"}, {"person_id": "2", "role": "child"}]
    }
    assert fails(f, {"m": "not a list"}).startswith("members")


def test_required_missing_value_names_the_field() -> None:
    assert fails({"id": {"from": "x", "required": True}}, {}) == "id: required value is missing"
