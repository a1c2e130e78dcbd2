"""The checks on what a provider answered, whatever the connector: text made of
Unicode scalar values, and a lookup's record being the subject's own."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.interface import ConnectorBadResponse
from gateway.errors import AccordError
from gateway.exchange.fetch_step import verify_record_subject, verify_scalar_text


@pytest.mark.parametrize(
    "record",
    [
        {"name": "A\ud800"},
        {"name": {"first": "\udfff"}},
        {"names": ["ok", "\ud83d"]},  # half of a surrogate pair
        {"\ud800": "key, not value"},
        MappingProxyType({"nested": ({"deep": ["x", {"y": "\udc00z"}]},)}),
        "\ud800",  # a cursor
    ],
)
def test_lone_surrogate_anywhere_is_a_bad_response(record: Any) -> None:
    with pytest.raises(ConnectorBadResponse) as err:
        verify_scalar_text(record)
    assert err.value.code == "connector_bad_response"


@given(
    st.recursive(
        st.text() | st.integers() | st.none(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_scalar_text_passes(value: Any) -> None:
    """Hypothesis' text is scalar values only (no surrogates): never refused."""
    verify_scalar_text(value)


@pytest.mark.parametrize(
    ("record", "subject"),
    [
        ({"person_id": "12345678901"}, "12345678901"),
        ({"person_id": 12345678901}, "12345678901"),  # a number compares by its digits
        ({"ids": {"national": "AB12"}}, "AB12"),
    ],
)
def test_the_subjects_own_record_passes(record: Any, subject: str) -> None:
    field = "ids.national" if "ids" in record else "person_id"
    verify_record_subject(record, field, subject)


@pytest.mark.parametrize(
    ("record", "subject"),
    [
        ({"person_id": "99999999999"}, "12345678901"),  # another person
        ({"given_name": "Ada"}, "12345678901"),  # no subject field at all
        ({"person_id": None}, "12345678901"),
        ({"person_id": "ab12"}, "AB12"),  # no case folding
        ({"person_id": " AB12"}, "AB12"),  # no trimming
        ({"person_id": "e\u0301"}, "\u00e9"),  # no Unicode normalisation
        ({"person_id": True}, "True"),
        ({"person_id": 1.0}, "1"),
        ({"person_id": ["12345678901"]}, "12345678901"),
    ],
)
def test_another_record_than_the_subjects_is_a_bad_response(record: Any, subject: str) -> None:
    with pytest.raises(AccordError) as err:
        verify_record_subject(record, "person_id", subject)
    assert (err.value.status, err.value.code) == (502, "connector_bad_response")
    assert subject not in err.value.detail
