"""Release operations, the last step before data leaves: each one, and default-deny.

Pseudonyms are checked against an independent RFC 5869 HKDF + HMAC written
here from the RFC, so a change to the derivation (and with it every
consumer's pseudonyms) cannot slip through unnoticed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.release import apply_release, pseudonym, release_record
from gateway.release_obligations import ReleaseError, normalise_obligations
from tests.gateway.release_support import PERSON, SECRET, ctx, one, refused

# --------------------------------------------------------------------------- pass / drop


def test_pass_releases_the_value_unchanged() -> None:
    assert one({"given_name": "pass"}) == {"given_name": "Ada"}
    assert one({"given_name": {"operation": "pass"}}) == {"given_name": "Ada"}


def test_drop_and_missing_obligations_release_nothing() -> None:
    assert one({"given_name": "drop"}) == {}
    assert one({}) == {}
    assert one({"family_name": "pass"}) == {"family_name": "Lovelace"}  # default deny


def test_obligation_for_a_field_not_on_record_releases_nothing() -> None:
    assert one({"shoe_size": "pass"}) == {}
    assert one({"x": "pass"}, {"x": None}) == {}


# --------------------------------------------------------------------------- mask


@pytest.mark.parametrize(
    ("params", "value", "expected"),
    [
        ({"keep_suffix": 4}, "12345678901", "*******8901"),
        ({"keep_prefix": 2, "keep_suffix": 2}, "12345678901", "12*******01"),
        ({}, "secret", "******"),
        ({"keep_prefix": 3, "keep_suffix": 3}, "short", "*****"),  # would reveal it all
        ({"keep_suffix": 2}, 123456, "****56"),
    ],
)
def test_mask_keeps_only_the_stated_prefix_and_suffix(
    params: dict[str, Any], value: Any, expected: str
) -> None:
    assert one({"v": {"operation": "mask", **params}}, {"v": value}) == {"v": expected}


# --------------------------------------------------------------------------- generalise


@pytest.mark.parametrize(
    ("to", "value", "expected"),
    [
        ("year", "2008-11-25", "2008"),
        ("month", "2008-11-25", "2008-11"),
        ("year", "2020-03-04T05:06:07+00:00", "2020"),
        ("month", dt.date(1999, 1, 31), "1999-01"),
        ("district", "1012 AB", "1012"),
        ("district", "1012ab", "1012"),
        ("district", "SW1A 1AA", "SW1A"),
        ("district", "sw1a1aa", "SW1A"),
    ],
)
def test_generalise_dates_and_postcodes(to: str, value: Any, expected: str) -> None:
    assert one({"v": {"operation": "generalise", "to": to}}, {"v": value}) == {"v": expected}


@pytest.mark.parametrize(
    ("born", "width", "band"),
    [
        ("2008-11-25", 10, "10-19"),  # 18 today
        ("2008-11-26", 5, "15-19"),  # 17 until tomorrow
        ("1950-01-01", 10, "70-79"),
        ("2026-01-01", 10, "0-9"),
    ],
)
def test_generalise_birth_date_to_an_age_band_on_the_given_day(
    born: str, width: int, band: str
) -> None:
    ob = {"birth_date": {"operation": "generalise", "to": "band", "width": width}}
    assert one(ob, {"birth_date": born}) == {"birth_date": band}


def test_generalise_an_age_or_count_to_a_band() -> None:
    ob = {"age": {"operation": "generalise", "to": "band", "width": 5}}
    assert one(ob, {"age": 42}) == {"age": "40-44"}
    assert one(ob, {"age": "42"}) == {"age": "40-44"}


@pytest.mark.parametrize(
    ("ob", "value"),
    [
        ({"operation": "generalise", "to": "year"}, "last spring"),
        ({"operation": "generalise", "to": "district"}, 1012),
        ({"operation": "generalise", "to": "band", "width": 10}, "n/a"),
    ],
)
def test_generalise_of_the_wrong_type_refuses_the_whole_release(ob: Any, value: Any) -> None:
    with pytest.raises(ReleaseError) as err:
        apply_release([{"v": "2001-01-01", "w": 1}, {"v": value}], {"v": ob}, ctx())
    assert err.value.code == "release_type_mismatch"


# --------------------------------------------------------------------------- pseudonymise


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()  # RFC 5869 §2.2
    okm, block, i = b"", b"", 1
    while len(okm) < length:  # §2.3
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm, i = okm + block, i + 1
    return okm[:length]


def _expected(value: str, agreement: str, consumer: str) -> str:
    info = b"".join(len(p).to_bytes(4, "big") + p for p in (agreement.encode(), consumer.encode()))
    key = _hkdf_sha256(SECRET, b"accord/pseudonym/v1", info)
    mac = hmac.new(key, value.encode(), hashlib.sha256).digest()
    return "ps1_" + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_pseudonym_is_hmac_under_an_hkdf_key_per_agreement_and_consumer() -> None:
    out = one({"person_id": "pseudonymise"})
    assert out == {"person_id": _expected("12345678901", "agr-1", "welfare-office")}
    assert "12345678901" not in out["person_id"]


def test_same_consumer_gets_stable_pseudonyms() -> None:
    a = one({"person_id": "pseudonymise"})
    b = release_record(PERSON, {"person_id": "pseudonymise"}, ctx())  # a new context
    assert a == b


def test_two_consumers_cannot_link_their_records() -> None:
    ids = [f"{i:011d}" for i in range(200)]
    recs = [{"person_id": i} for i in ids]
    ob = {"person_id": "pseudonymise"}
    welfare = {r["person_id"] for r in apply_release(recs, ob, ctx(consumer="welfare-office"))}
    tax = {r["person_id"] for r in apply_release(recs, ob, ctx(consumer="tax-authority"))}
    other_agreement = {r["person_id"] for r in apply_release(recs, ob, ctx(agreement="agr-2"))}
    assert len(welfare) == len(tax) == len(other_agreement) == 200
    assert not welfare & tax
    assert not welfare & other_agreement


def test_pseudonym_domains_cannot_collide_by_concatenation() -> None:
    # ("ab", "c") and ("a", "bc") must not derive the same key.
    assert pseudonym("x", ctx("ab", "c")) != pseudonym("x", ctx("a", "bc"))


def test_pseudonymise_lists_and_refuse_objects() -> None:
    out = one({"ids": "pseudonymise"}, {"ids": ["1", "2"]})
    assert out["ids"] == [pseudonym("1", ctx()), pseudonym("2", ctx())]
    refused("release_invalid_obligation", {"n": "pseudonymise"}, {"n": {"first": "Ada"}})


def test_short_root_secret_is_refused() -> None:
    with pytest.raises(ReleaseError) as err:
        ctx(secret=b"short")
    assert err.value.code == "release_misconfigured"


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "obligations",
    [
        {"given_name": "pass", "family_name": "leak"},
        {"given_name": "PASS"},
        {"given_name": {"operation": "encrypt"}},
        {"given_name": {"keep_prefix": 1}},
        {"given_name": ["pass"]},
        {"given_name": {"operation": "mask", "width": 3}},
        {"given_name": {"operation": "mask", "keep_prefix": -1}},
        {"given_name": {"operation": "mask", "keep_prefix": True}},
        {"birth_date": {"operation": "generalise"}},
        {"birth_date": {"operation": "generalise", "to": "decade"}},
        {"birth_date": {"operation": "generalise", "to": "band"}},
        {"birth_date": {"operation": "generalise", "to": "year", "width": 5}},
        {"birth_date": {"operation": "verify_only", "predicates": "age_over(18)"}},
        {"birth_date": {"operation": "aggregate", "min_k": 0}},
        ["given_name"],
    ],
)
def test_unknown_or_malformed_obligation_refuses_the_whole_release(obligations: Any) -> None:
    refused("release_invalid_obligation", obligations)


def test_bad_listed_predicate_refuses_the_obligations() -> None:
    with pytest.raises(ReleaseError) as err:
        normalise_obligations({"b": {"operation": "verify_only", "predicates": ["drop(b)"]}})
    assert err.value.code == "predicate_invalid"


EMITTING = ("pass", "mask", "pseudonymise")


@settings(max_examples=200, deadline=None)
@given(
    record=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.one_of(st.text(max_size=8), st.integers(), st.none()),
    ),
    obligations=st.dictionaries(
        st.sampled_from(["a", "b", "c", "x"]),
        st.sampled_from(["pass", "drop", "mask", "pseudonymise", "verify_only", "aggregate"]),
    ),
)
def test_only_fields_with_an_emitting_obligation_ever_leave(
    record: dict[str, Any], obligations: dict[str, str]
) -> None:
    out = release_record(record, obligations, ctx())
    allowed = {f for f, op in obligations.items() if op in EMITTING}
    assert set(out) <= allowed & set(record)
    for f, v in out.items():
        if obligations[f] == "pseudonymise":
            assert v == pseudonym(record[f], ctx())
