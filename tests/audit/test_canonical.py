"""The fast canonical encoder gives exactly rfc8785's bytes, or the same refusal."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.canonical import canonical_bytes
from tests.audit.conftest import entry

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 1e16, 1e21, 1e-7, 0.0001, 123456789.125, 5e-324])
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=6), kids, max_size=5)
    ),
    max_leaves=30,
)


def _jcs(doc: Any) -> bytes | type[Exception]:
    try:
        out: bytes = rfc8785.dumps(doc)
        return out
    except Exception as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_fast_path_equals_rfc8785(doc: Any) -> None:
    want = _jcs(doc)
    if isinstance(want, bytes):
        assert canonical_bytes(doc) == want
    else:
        with pytest.raises(Exception):  # the same refusal as rfc8785
            canonical_bytes(doc)


@pytest.mark.parametrize(
    "doc",
    [
        {"\ue000": 1, "\U0001f600": 2},  # UTF-16 order differs from code-point order
        {"a": 1.0, "b": 1e21, "c": 1e-7, "d": -0.0, "e": 2**53 - 1, "f": 0.1},
        {"s": '\u0000\u001f\u007f"\\/\n\t', "t": "ünïcode ✓"},
        [entry(i) for i in range(6)],
    ],
)
def test_known_tricky_documents(doc: Any) -> None:
    assert canonical_bytes(doc) == rfc8785.dumps(doc)
