"""Steps read exactly their documented shape, and spec mistakes fail when compiling.

Regressions from the integrator review (#7, #8, #11): the ``decimal`` step took
a group separator anywhere and rounded extra digits, ``date`` let ``strptime``
guess field widths, ``int`` took ``1_0`` and Arabic-Indic digits; and a
``const`` or lookup value outside a closed enum, a bad date directive or a
consumer mapping reading a provider entity compiled, then failed every exchange
as the provider's fault. A value that does not fit is a ``mapping_error``
naming the field, never the value; a spec that cannot work does not compile.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.interface import MappingError
from connectors.mapping import compile_mapping

OPEN: dict[str, Any] = {"type": "object"}
EURO = {"places": 2, "decimal_separator": ",", "group_separator": "."}


def spec(fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "spec": "accord-mapping/1",
        "source": {"system": "dept", "entity": "thing"},
        "target": {"model": "person@1"},
        "fields": fields,
        **extra,
    }


def step_run(step: Any, value: Any) -> Any:
    return compile_mapping(spec({"v": {"from": "x", "steps": [step]}}), OPEN).map({"x": value})["v"]


def step_fails(step: Any, value: Any) -> str:
    with pytest.raises(MappingError) as err:
        step_run(step, value)
    assert err.value.code == "mapping_error"
    detail = err.value.detail
    assert detail.startswith("v: ")  # names the field ...
    if isinstance(value, str) and len(value.strip()) > 1:
        assert value.strip() not in detail  # ... never the value
    return detail


def compile_fails(fields: dict[str, Any], target_schema: Any = None, **extra: Any) -> str:
    with pytest.raises(MappingError) as err:
        compile_mapping(spec(fields, **extra), target_schema)
    return err.value.detail


# --------------------------------------------------------------------------- decimal (#7)


@pytest.mark.parametrize(
    "value",
    [
        "189.27",  # a dot-decimal export under "." grouping: was 18927.00
        "1.2.3,4",  # groups of one digit: was 123.40
        "1.23,45",
        "1234.567,89",  # a group after an ungrouped run
        ".123,45",
        "1.234.,5",
        "1,",
        ",5",
    ],
)
def test_decimal_group_separator_only_between_groups_of_three(value: str) -> None:
    assert "decimal" in step_fails({"decimal": EURO}, value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.234,50", "1234.50"), ("1234,5", "1234.50"), ("12.345.678,00", "12345678.00"),
     ("-1.000", "-1000.00"), ("0,01", "0.01"), ("189", "189.00")],
)  # fmt: skip
def test_decimal_well_grouped_amounts_still_read(value: str, expected: str) -> None:
    assert step_run({"decimal": EURO}, value) == expected


@pytest.mark.parametrize("value", ["12,345", "0,001", "1.234,567"])
def test_decimal_extra_digits_are_refused_not_rounded(value: str) -> None:
    assert "more than 2 decimal places" in step_fails({"decimal": EURO}, value)


def test_decimal_shift_does_not_round_half_cents() -> None:
    # the health insurer's PREMIUM_CENTS: 1.5 cents was released as 0.02
    step = {"decimal": {"shift": -2, "places": 2}}
    assert step_run(step, 12345) == "123.45"
    assert step_run(step, "150") == "1.50"
    assert "decimal places" in step_fails(step, "1.5")
    assert "decimal places" in step_fails(step, 1.5)


def test_decimal_trailing_zeros_are_not_extra_digits() -> None:
    assert step_run({"decimal": {"places": 2}}, "12.340") == "12.34"


@pytest.mark.parametrize(
    "value", ["1_000", "1e3", "1E3", "١٢٣", "１２", "NaN", "Infinity", "0x10", "1 000", "+-1"]
)
def test_decimal_refuses_what_is_not_a_plain_decimal(value: str) -> None:
    assert "decimal" in step_fails("decimal", value)


def test_decimal_same_separators_do_not_compile() -> None:
    step = {"decimal": {"decimal_separator": ",", "group_separator": ","}}
    assert "separators" in compile_fails({"v": {"from": "x", "steps": [step]}}, OPEN)


def _grouped(whole: int) -> str:
    return f"{whole:,}".replace(",", ".")


@given(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.integers(min_value=0, max_value=99),
    st.booleans(),
)
def test_decimal_round_trips_every_well_formed_amount(whole: int, cents: int, group: bool) -> None:
    sign = "-" if whole < 0 else ""
    digits = _grouped(abs(whole)) if group else str(abs(whole))
    text = f"{sign}{digits},{cents:02d}"
    expected = Decimal(f"{sign}{abs(whole)}.{cents:02d}")
    assert Decimal(step_run({"decimal": EURO}, text)) == expected
    assert step_run({"decimal": EURO}, text) == format(expected, "f")


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=4))
def test_decimal_refuses_what_it_cannot_represent_exactly(amount: Decimal) -> None:
    text = format(amount, "f")
    exact = amount == amount.quantize(Decimal("0.01"))
    step = {"decimal": {"places": 2}}
    if exact:
        assert Decimal(step_run(step, text)) == amount
    else:
        assert "decimal places" in step_fails(step, text)


# --------------------------------------------------------------------------- int and date (#8)


@pytest.mark.parametrize("value", ["1_0", "٣", "１２", "1e3", "0x1", "--1", "1 0", "+ 1"])
def test_int_refuses_underscores_and_non_ascii_digits(value: str) -> None:
    assert "int: not an integer" in step_fails("int", value)


@pytest.mark.parametrize(("value", "expected"), [("+7", 7), ("-0", 0), (" 12\n", 12), (5, 5)])
def test_int_reads_an_optional_sign_and_ascii_digits(value: Any, expected: int) -> None:
    assert step_run("int", value) == expected


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("%Y%m%d", "2024111"),  # was 2024-11-01
        ("%Y%m%d", "202412"),  # was 2024-01-02
        ("%Y%m%d", "202411011"),
        ("%d/%m/%Y", "1/2/2024"),
        ("%d/%m/%Y", "01/02/24"),
        ("%d-%m-%Y", "01-02-２０２４"),
        ("%Y-%m-%d", " 2024-01-02"),
        ("%Y-%m-%d", "2024-1-02"),
    ],
)
def test_date_input_must_have_the_formats_exact_shape(fmt: str, value: str) -> None:
    assert f"date: does not match {fmt!r}" in step_fails({"date": fmt}, value)


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [("%Y%m%d", "20241101", "2024-11-01"), ("%Y%m%d", 20240229, "2024-02-29"),
     ("%d.%m.%Y", "01.02.2003", "2003-02-01"), ("%Y-%j", "2024-060", "2024-02-29"),
     ("%Y-%m-%d %H:%M", "2024-01-02 03:04", "2024-01-02")],
)  # fmt: skip
def test_date_well_formed_input_still_reads(fmt: str, value: Any, expected: str) -> None:
    assert step_run({"date": fmt}, value) == expected


@pytest.mark.parametrize(
    ("fmt", "value"),
    [("%Y-%m-%dT%H:%M:%S%z", "2024-01-02T3:04:05+0000"),
     ("%Y-%m-%dT%H:%M:%S%z", "2024-01-02T03:04:05+0"),
     ("%Y%m%d %H%M", "2024012 0930")],
)  # fmt: skip
def test_datetime_input_must_have_the_formats_exact_shape(fmt: str, value: str) -> None:
    step = {"datetime": {"format": fmt, "naive_as_utc": True}}
    assert "datetime: does not match" in step_fails(step, value)


@pytest.mark.parametrize(
    "value", ["2024-01-02T03:04:05+0100", "2024-01-02T03:04:05+01:00", "2024-01-02T02:04:05Z"]
)
def test_datetime_offsets_still_read(value: str) -> None:
    out = step_run({"datetime": "%Y-%m-%dT%H:%M:%S%z"}, value)
    assert out in ("2024-01-02T03:04:05+01:00", "2024-01-02T02:04:05+00:00")


@given(st.dates())
def test_date_round_trips_every_date(day: Any) -> None:
    assert step_run({"date": "%Y%m%d"}, day.strftime("%Y%m%d").zfill(8)) == day.isoformat()


# --------------------------------------------------------------------------- compile time (#11)


@pytest.mark.parametrize(
    "step",
    [{"date": "%Q"}, {"date": "%Y-%m-%"}, {"date": "%d %B %Y"}, {"datetime": "%Y %I%p"},
     {"datetime": {"format": "%s", "naive_as_utc": True}}, {"format_date": "%Q"}],
)  # fmt: skip
def test_bad_date_directive_is_a_compile_error(step: Any) -> None:
    detail = compile_fails({"birth_date": {"from": "dob", "steps": [step]}})
    assert detail.startswith("birth_date: ") and "directive" in detail


def test_const_outside_a_closed_enum_is_a_compile_error() -> None:
    detail = compile_fails({"sex": {"const": "alien"}})
    assert detail == "sex: a const value does not fit the target (enum check failed)"


def test_inline_lookup_value_outside_the_enum_is_a_compile_error() -> None:
    lookup = {"lookup": {"F": "femme", "M": "homme"}}
    detail = compile_fails({"sex": {"from": "g", "steps": [lookup]}})
    assert detail == "sex: a lookup value does not fit the target (enum check failed)"


def test_named_code_list_value_outside_the_enum_is_a_compile_error() -> None:
    detail = compile_fails(
        {"sex": {"from": "g", "steps": ["strip", {"lookup": "g"}]}},
        codelists={"g": {"F": "female", "M": "male", "U": "unknown"}},
    )
    assert detail.startswith("sex: a lookup value")


def test_default_that_does_not_fit_the_target_is_a_compile_error() -> None:
    assert "default value" in compile_fails({"sex": {"from": "g", "default": "n/a"}})
    assert "const value" in compile_fails({"person_id": {"const": "12"}})  # pattern


def test_fixed_values_inside_each_are_checked_at_their_path() -> None:
    schema = {
        "type": "object",
        "properties": {
            "members": {
                "type": "array",
                "items": {"type": "object", "properties": {"role": {"enum": ["head", "child"]}}},
            }
        },
    }
    bad = {"members": {"each": {"from": "m", "fields": {"role": {"const": "boss"}}}}}
    assert compile_fails(bad, schema).startswith("members[].role: a const value")
    good = {"members": {"each": {"from": "m", "fields": {"role": {"const": "head"}}}}}
    assert compile_mapping(spec(good), schema).map({"m": [{}]}) == {"members": [{"role": "head"}]}


def test_fixed_values_that_fit_still_compile() -> None:
    m = compile_mapping(
        spec(
            {
                "sex": {"from": "g", "steps": [{"lookup": {"F": "female", "M": "male"}}]},
                "marital_status": {"const": "single"},
            }
        )
    )
    assert m.map({"g": "F"}, partial=True) == {"sex": "female", "marital_status": "single"}


def test_consumer_mapping_reading_a_provider_entity_does_not_compile() -> None:
    doc = {
        "spec": "accord-mapping/1",
        "source": {"system": "x", "entity": "y"},
        "target": {"system": "welfare_office", "entity": "client", "schema": "c.json"},
        "fields": {"ID": {"from": "person_id"}},
    }
    with pytest.raises(MappingError) as err:
        compile_mapping(doc, {"type": "object", "properties": {"ID": {"type": "string"}}})
    assert "provider entity" in err.value.detail
