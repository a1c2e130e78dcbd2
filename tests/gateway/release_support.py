"""Shared fixtures of the release-operation tests: one person, one context, helpers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gateway.release import ReleaseContext, apply_release, release_record
from gateway.release_obligations import ReleaseError

__all__ = ["PERSON", "SECRET", "TODAY", "ctx", "one", "refused"]

SECRET = b"s" * 32
TODAY = dt.date(2026, 11, 25)
PERSON = {
    "person_id": "12345678901",
    "given_name": "Ada",
    "family_name": "Lovelace",
    "birth_date": "2008-11-25",
    "address_city": "Northbridge",
    "address_postcode": "1012 AB",
    "registered_at": "2020-03-04T05:06:07+00:00",
    "income": "1234.50",
}


def ctx(agreement: str = "agr-1", consumer: str = "welfare-office", **kw: Any) -> ReleaseContext:
    return ReleaseContext(
        agreement, consumer, kw.pop("secret", SECRET), kw.pop("today", TODAY), **kw
    )


def one(obligations: dict[str, Any], record: dict[str, Any] | None = None, **kw: Any) -> Any:
    return release_record(record or PERSON, obligations, ctx(**kw))


def refused(code: str, obligations: Any, record: dict[str, Any] | None = None) -> None:
    with pytest.raises(ReleaseError) as err:
        apply_release([record or PERSON], obligations, ctx())
    assert err.value.code == code
