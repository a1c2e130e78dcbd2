"""The gateway's own classification bound on a decision (``verify_within_classification``).

The policy judges the agreement's ceiling, the caller's clearance and caveats and
the legal basis for sensitive personal data; the exchange judges them again on the
same policy input, so a policy version that skips them releases nothing
(tests/exchange/test_release_bounded_by_agreement.py drives it over HTTP). The
reading is the policy's own: fail closed on anything it does not know.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.exchange.release_step import verify_within_classification
from gateway.release_obligations import ExceedsAgreement

LABELS: dict[str, Any] = {
    "city": {"level": "internal", "caveats": [], "personal": "quasi_identifier"},
    "name": {"level": "confidential", "caveats": [], "personal": "identifier"},
    "diagnosis": {"level": "confidential", "caveats": ["health"], "personal": "special"},
    "odd": {"level": "cosmic", "caveats": []},
    "bare": {"caveats": []},
}


def _input(
    *,
    ceiling: str = "confidential",
    clearance: str = "restricted",
    caveats: tuple[str, ...] = ("health",),
    legal_basis: str = "Act s.1",
) -> dict[str, Any]:
    return {
        "scheme": {"levels": ["public", "internal", "confidential", "restricted"]},
        "agreement": {"ceiling": ceiling, "legal_basis": legal_basis},
        "caller": {"clearance": clearance, "caveats": list(caveats)},
    }


def _release(*fields: str) -> dict[str, Any]:
    return {name: {"operation": "pass"} for name in fields}


def test_fields_within_every_bound_are_released() -> None:
    verify_within_classification(_release("city", "name", "diagnosis"), LABELS, _input())
    # A dropped field is not released, so nothing bounds it.
    verify_within_classification({"odd": {"operation": "drop"}}, LABELS, _input())


@pytest.mark.parametrize(
    ("field", "policy_input", "says"),
    [
        ("name", _input(ceiling="internal"), "above the agreement's ceiling"),
        ("name", _input(clearance="internal"), "above the caller's clearance"),
        ("city", _input(ceiling="top-secret"), "above the agreement's ceiling"),
        ("city", _input(clearance=""), "above the caller's clearance"),
        ("odd", _input(), "above the agreement's ceiling"),
        ("bare", _input(), "above the agreement's ceiling"),
        ("unlabelled", _input(), "above the agreement's ceiling"),
        ("diagnosis", _input(caveats=()), "needs caveats the caller lacks: health"),
        ("diagnosis", _input(legal_basis=""), "special personal data"),
    ],
)
def test_a_field_beyond_a_bound_releases_nothing(
    field: str, policy_input: dict[str, Any], says: str
) -> None:
    with pytest.raises(ExceedsAgreement) as err:
        verify_within_classification(_release("city", field), LABELS, policy_input)
    assert err.value.code == "decision_exceeds_agreement"
    assert says in err.value.detail and repr(field) in err.value.detail
