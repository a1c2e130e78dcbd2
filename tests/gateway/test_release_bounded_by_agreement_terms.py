"""What "no more than the agreement's term" means, operation by operation.

``verify_within_terms`` is the gateway's own check that a decision's obligations
stay within the signed agreement (the exchange runs it whatever the policy says;
tests/exchange/test_release_bounded_by_agreement.py drives it over HTTP). Here:
the order it uses, on each operation and parameter that can widen a release.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.release_obligations import ExceedsAgreement, verify_within_terms

TERMS: dict[str, Any] = {
    "id": {"operation": "pseudonymise"},
    "name": {"operation": "pass"},
    "surname": {"operation": "mask", "keep_prefix": 1},
    "born": {"operation": "verify_only", "predicates": ["age_over(18)", "age_over(65)"]},
    "moved": {"operation": "generalise", "to": "month"},
    "income": {"operation": "generalise", "to": "band", "width": 1000},
    "postcode": {"operation": "generalise", "to": "district"},
    "city": {"operation": "aggregate"},
}

WITHIN = [
    {"id": "pseudonymise"},
    {"id": "drop"},
    # pass is the widest term: every operation lets out no more
    *({"name": op} for op in ("pass", "drop", "pseudonymise", "aggregate")),
    {"name": {"operation": "mask", "keep_suffix": 2}},
    {"name": {"operation": "verify_only", "predicates": ["exists(name)"]}},
    {"surname": {"operation": "mask", "keep_prefix": 1}},
    {"surname": {"operation": "mask"}},
    {"born": {"operation": "verify_only", "predicates": ["age_over(18)"]}},
    {"born": {"operation": "verify_only"}},
    {"moved": {"operation": "generalise", "to": "year"}},
    {"income": {"operation": "generalise", "to": "band", "width": 5000}},
    {"postcode": {"operation": "generalise", "to": "district", "min_k": 5}},
    {"city": {"operation": "aggregate", "min_k": 5}},
    {"city": "aggregate"},
    {"unlisted": "drop"},  # dropping releases nothing
]

BEYOND = [
    ({"unlisted": "pass"}, "does not list"),
    ({"id": "pass"}, "pseudonymise"),
    ({"id": {"operation": "mask", "keep_prefix": 3}}, "pseudonymise"),
    ({"born": "pass"}, "verify_only"),
    ({"born": {"operation": "verify_only", "predicates": ["age_over(30)"]}}, "verify_only"),
    ({"surname": "pass"}, "mask"),
    ({"surname": {"operation": "mask", "keep_prefix": 2}}, "keep_prefix=1"),
    ({"surname": {"operation": "mask", "keep_suffix": 1}}, "mask"),
    ({"surname": "pseudonymise"}, "mask"),
    ({"moved": "pass"}, "generalise"),
    ({"moved": {"operation": "generalise", "to": "band", "width": 10}}, "to=month"),
    ({"income": {"operation": "generalise", "to": "band", "width": 1500}}, "width=1000"),
    ({"income": {"operation": "generalise", "to": "band", "width": 500}}, "width=1000"),
    ({"postcode": "pass"}, "district"),
    ({"city": "pass"}, "aggregate"),
    ({"city": {"operation": "aggregate", "min_k": 4}}, "min_k=5"),
]


@pytest.mark.parametrize("obligations", WITHIN, ids=repr)
def test_obligations_within_the_terms_pass(obligations: dict[str, Any]) -> None:
    verify_within_terms(obligations, TERMS, min_k=5)


@pytest.mark.parametrize(("obligations", "named"), BEYOND, ids=repr)
def test_obligations_beyond_the_terms_are_refused(obligations: dict[str, Any], named: str) -> None:
    with pytest.raises(ExceedsAgreement) as err:
        verify_within_terms({"name": "pass", **obligations}, TERMS, min_k=5)
    assert (err.value.code, err.value.status) == ("obligation_exceeds_agreement", 500)
    assert named in err.value.detail and next(iter(obligations)) in err.value.detail


def test_a_term_the_gateway_cannot_read_bounds_nothing() -> None:
    with pytest.raises(ExceedsAgreement, match="cannot be read"):
        verify_within_terms({"x": "drop", "y": "pass"}, {"y": {"operation": "shred"}}, min_k=None)


def test_a_k_is_bounded_only_where_the_agreement_sets_one() -> None:
    verify_within_terms({"city": {"operation": "aggregate", "min_k": 2}}, TERMS, min_k=None)
