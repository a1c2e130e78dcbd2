"""Hypothesis: any byte flip breaks a signed agreement; canonical bytes are stable."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.agreements.signing import verify_agreement
from gateway.errors import AccordError
from gateway.jose import b64url_decode, b64url_encode
from gateway.jose.jws import canonical_bytes
from tests.gateway.test_interop import resolver_for

VECTOR = json.loads(
    (Path(__file__).parent / "vectors" / "agreement_two_party.json").read_text(encoding="utf-8")
)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
RESOLVE = resolver_for(VECTOR["keys"])


def flipped(data: bytes, index: int, mask: int) -> bytes:
    i = index % len(data)
    return data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]


def verifies(doc: dict) -> bool:
    try:
        verify_agreement(doc, RESOLVE, NOW)
    except AccordError:
        return False
    return True


def test_untouched_vector_verifies() -> None:
    assert verifies(VECTOR["signed"])


@settings(max_examples=150, deadline=None)
@given(index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_any_payload_byte_flip_fails(index: int, mask: int) -> None:
    doc = json.loads(json.dumps(VECTOR["signed"]))
    doc["payload"] = b64url_encode(flipped(b64url_decode(doc["payload"]), index, mask))
    assert not verifies(doc)


@settings(max_examples=150, deadline=None)
@given(
    which=st.integers(0, 1),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_signature_byte_flip_fails(which: int, index: int, mask: int) -> None:
    doc = json.loads(json.dumps(VECTOR["signed"]))
    sig = doc["signatures"][which]
    sig["signature"] = b64url_encode(flipped(b64url_decode(sig["signature"]), index, mask))
    assert not verifies(doc)


@settings(max_examples=100, deadline=None)
@given(
    which=st.integers(0, 1),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_protected_header_byte_flip_fails(which: int, index: int, mask: int) -> None:
    doc = json.loads(json.dumps(VECTOR["signed"]))
    sig = doc["signatures"][which]
    sig["protected"] = b64url_encode(flipped(b64url_decode(sig["protected"]), index, mask))
    assert not verifies(doc)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    value=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    indent=st.sampled_from([None, 0, 2, 4]),
    seed=st.randoms(),
)
def test_canonical_bytes_stable_under_key_order_and_whitespace(value, indent, seed) -> None:  # type: ignore[no-untyped-def]
    items = list(value.items())
    seed.shuffle(items)
    reordered = json.loads(json.dumps(dict(items), indent=indent))
    assert canonical_bytes(reordered) == canonical_bytes(value)
    # and canonical bytes are a fixed point
    assert canonical_bytes(json.loads(canonical_bytes(value))) == canonical_bytes(value)
