"""Verify-only predicates and k-suppressed aggregates: answers without the values.

A predicate answers yes or no on a field the agreement opens for it, from a
closed set of forms that are parsed, never evaluated; an aggregate releases
only cells of at least k records, grouped and summed by allowed fields.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.release import evaluate_predicate
from gateway.release_aggregates import aggregate
from gateway.release_obligations import ReleaseError, parse_predicate
from tests.gateway.release_support import PERSON, ctx, one

# --------------------------------------------------------------------------- verify_only


def listing(fname: str, *predicates: str) -> dict[str, Any]:
    return {fname: {"operation": "verify_only", "predicates": list(predicates)}}


def test_verify_only_value_never_leaves_in_a_record_release() -> None:
    out = one({"birth_date": "verify_only", "given_name": "pass"})
    assert out == {"given_name": "Ada"}


@pytest.mark.parametrize(
    ("predicate", "answer"),
    [
        ("age_over(18)", True),  # 18th birthday is today
        ("age_over(19)", False),
        ("age_under(18)", False),
        ("age_under(19)", True),
        ("age_over(birth_date, 18)", True),
    ],
)
def test_age_predicates_answer_yes_or_no(predicate: str, answer: bool) -> None:
    got = evaluate_predicate(PERSON, predicate, listing("birth_date", predicate), ctx())
    assert got is answer


@pytest.mark.parametrize(
    ("predicate", "answer"),
    [
        ('equals(address_city, "northbridge")', True),
        ('equals(address_city, "Eastmoor")', False),
        ('not_equals(address_city, "Eastmoor")', True),
        ('one_of(address_city, "Eastmoor", "Northbridge")', True),
        ("exists(address_city)", True),
        ('before(registered_at, "2021-01-01")', True),
        ('after(registered_at, "2021-01-01")', False),
        ("greater_than(income, 1000)", True),
        ("less_than(income, 1000.5)", False),
    ],
)
def test_value_predicates_answer_yes_or_no(predicate: str, answer: bool) -> None:
    fname = parse_predicate(predicate)[1]
    assert evaluate_predicate(PERSON, predicate, listing(fname, predicate), ctx()) is answer


def test_pass_fields_may_be_asked_anything() -> None:
    assert evaluate_predicate(PERSON, "age_over(18)", {"birth_date": "pass"}, ctx()) is True


@pytest.mark.parametrize(
    "predicate", ['before(birth_date, "2008-06-01")', "age_over(17)", "exists(birth_date)"]
)
def test_verify_only_without_listed_predicates_answers_nothing(predicate: str) -> None:
    # Open-ended questions would let a caller binary-search the exact birth date.
    with pytest.raises(ReleaseError) as err:
        evaluate_predicate(PERSON, predicate, {"birth_date": "verify_only"}, ctx())
    assert err.value.code == "predicate_not_allowed"


def test_age_predicate_uses_the_contexts_birth_date_field() -> None:
    rec = {"dob": "2000-01-01"}
    c = ctx(birth_date_field="dob")
    assert evaluate_predicate(rec, "age_over(18)", listing("dob", "age_over(18)"), c) is True
    with pytest.raises(ReleaseError) as err:
        evaluate_predicate(rec, "age_over(18)", listing("birth_date", "age_over(18)"), c)
    assert err.value.code == "predicate_not_allowed"


def test_predicate_on_a_field_the_agreement_does_not_open_is_refused() -> None:
    for ob in ({}, {"birth_date": "mask"}, {"birth_date": "pseudonymise"}):
        with pytest.raises(ReleaseError) as err:
            evaluate_predicate(PERSON, "age_over(18)", ob, ctx())
        assert err.value.code == "predicate_not_allowed"


def test_only_listed_predicates_may_be_asked() -> None:
    ob = {"birth_date": {"operation": "verify_only", "predicates": ["age_over(18)"]}}
    assert evaluate_predicate(PERSON, "age_over( 18 )", ob, ctx()) is True
    with pytest.raises(ReleaseError) as err:
        evaluate_predicate(PERSON, 'equals(birth_date, "2008-11-25")', ob, ctx())
    assert err.value.code == "predicate_not_allowed"


def test_predicate_on_a_missing_value_is_undecidable_not_false() -> None:
    with pytest.raises(ReleaseError) as err:
        evaluate_predicate({}, "age_over(18)", listing("birth_date", "age_over(18)"), ctx())
    assert err.value.code == "predicate_undecidable"
    ob = listing("birth_date", "exists(birth_date)")
    assert evaluate_predicate({}, "exists(birth_date)", ob, ctx()) is False


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('id')",
        "age_over(18) or true",
        "age_over()",
        'age_over("18")',
        "equals(address_city)",
        'equals("x", address_city)',
        "one_of(address_city, other_field)",
        'matches(address_city, ".*")',
        "age_over(18",
        "x" * 600,
        42,
    ],
)
def test_predicates_outside_the_closed_set_are_invalid(text: Any) -> None:
    with pytest.raises(ReleaseError) as err:
        parse_predicate(text)
    assert err.value.code == "predicate_invalid"


# --------------------------------------------------------------------------- aggregate

POP = [
    {"city": c, "birth_date": f"{y}-06-01", "amount": "10.50"}
    for c, y, n in [("Northbridge", 1980, 7), ("Eastmoor", 1980, 2), ("Southvale", 1990, 5)]
    for _ in range(n)
]


def test_aggregate_suppresses_cells_below_k() -> None:
    ob = {"city": {"operation": "aggregate", "min_k": 5}}
    res = aggregate(POP, ob, ctx(), group_by=["city"], min_k=2)
    assert res.min_k == 5
    # Eastmoor's 2 never appear, and nor do Southvale's 5: the total (14) minus
    # the two visible cities would otherwise give Eastmoor's 2 back.
    assert [dict(c) for c in res.cells] == [{"city": "Northbridge", "count": 7}]
    assert res.suppressed == 2


def test_aggregate_sums_and_groups_by_generalised_values() -> None:
    ob = {
        "birth_date": {"operation": "generalise", "to": "year"},
        "amount": {"operation": "aggregate", "min_k": 3},
    }
    res = aggregate(
        POP, ob, ctx(), group_by=["birth_date"], measures=["count", "sum(amount)"], min_k=3
    )
    assert [dict(c) for c in res.cells] == [
        {"birth_date": "1980", "count": 9, "sum_amount": "94.50"},
        {"birth_date": "1990", "count": 5, "sum_amount": "52.50"},
    ]


@pytest.mark.parametrize(
    ("ob", "group_by", "measures", "code"),
    [
        ({"city": "aggregate"}, ["birth_date"], ["count"], "aggregate_not_allowed"),
        ({"city": "verify_only"}, ["city"], ["count"], "aggregate_not_allowed"),
        ({"city": "aggregate"}, ["city"], ["sum(amount)"], "aggregate_not_allowed"),
        (
            {"city": "aggregate", "birth_date": {"operation": "generalise", "to": "year"}},
            ["city"],
            ["sum(birth_date)"],
            "aggregate_not_allowed",
        ),
        ({"city": "aggregate"}, ["city"], ["avg(amount)"], "aggregate_not_allowed"),
        ({"city": "aggregate"}, ["city"], ["count"], "release_invalid_obligation"),
    ],
)
def test_aggregate_refusals(
    ob: dict[str, Any], group_by: list[str], measures: list[str], code: str
) -> None:
    min_k = 1 if code == "release_invalid_obligation" else 2
    with pytest.raises(ReleaseError) as err:
        aggregate(POP, ob, ctx(), group_by=group_by, measures=measures, min_k=min_k)
    assert err.value.code == code


def test_aggregate_fields_never_leave_as_records() -> None:
    assert one({"city": {"operation": "aggregate", "min_k": 5}}, {"city": "X"}) == {}
