"""``generalise to: band`` of numbers (decimal strings too), and the predicate check
the exchange makes before it asks the provider anything."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.release import verify_predicate_allowed
from gateway.release_obligations import ReleaseError
from tests.gateway.release_support import one


def _band(value: Any, width: int) -> Any:
    ob = {"amount": {"operation": "generalise", "to": "band", "width": width}}
    return one(ob, {"amount": value})["amount"]


@pytest.mark.parametrize(
    ("value", "width", "band"),
    [
        ("123.45", 100, "100-199.99"),
        ("99.99", 100, "0-99.99"),
        ("100.00", 100, "100-199.99"),
        ("0.00", 100, "0-99.99"),
        ("1999.9", 1000, "1000-1999.9"),
        ("-50.25", 100, "-100--0.01"),
        ("-100.00", 100, "-100--0.01"),
        ("-100.01", 100, "-200--100.01"),
        ("123456789012.34", 1000, "123456789000-123456789999.99"),
        (" 42.50 ", 10, "40-49.99"),
    ],
)
def test_money_as_a_decimal_string_is_banded_not_read_as_a_date(
    value: str, width: int, band: str
) -> None:
    assert _band(value, width) == band


@pytest.mark.parametrize(
    ("value", "band"), [(250, "200-299"), ("250", "200-299"), ("-5", "-100--1"), (0, "0-99")]
)
def test_integer_bands_keep_their_format(value: Any, band: str) -> None:
    assert _band(value, 100) == band


def test_one_fields_decimal_bands_group_together() -> None:
    """Two-place amounts in one band read the same, so an aggregate groups them."""
    assert {_band(v, 100) for v in ("100.00", "150.50", "199.99")} == {"100-199.99"}


@pytest.mark.parametrize("value", ["12.3.4", "1e5", "NaN", "12,50", "", True, 1.5])
def test_what_is_neither_a_number_nor_a_date_is_refused(value: Any) -> None:
    with pytest.raises(ReleaseError) as err:
        _band(value, 10)
    assert err.value.code == "release_type_mismatch"


LISTED = {"birth_date": {"operation": "verify_only", "predicates": ["age_over(18)"]}}


@pytest.mark.parametrize(
    ("predicate", "obligations"),
    [
        ("age_over(21)", LISTED),  # not a listed question
        ("age_over(18)", {"birth_date": {"operation": "verify_only"}}),  # no list: nothing
        ("exists(given_name)", LISTED),  # a field the obligations do not open
        ('equals(given_name, "Ada")', {"given_name": {"operation": "mask"}}),
    ],
)
def test_predicate_not_allowed_needs_no_record(predicate: str, obligations: Any) -> None:
    with pytest.raises(ReleaseError) as err:
        verify_predicate_allowed(predicate, obligations)
    assert err.value.code == "predicate_not_allowed"


@pytest.mark.parametrize(
    ("predicate", "obligations"),
    [
        ("age_over(18)", LISTED),
        ("age_over( 18 )", LISTED),  # compared after parsing
        ('equals(given_name, "Ada")', {"given_name": {"operation": "pass"}}),
    ],
)
def test_allowed_predicates_pass_the_check(predicate: str, obligations: Any) -> None:
    verify_predicate_allowed(predicate, obligations)
