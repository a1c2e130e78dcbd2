"""Exchanges across a new agreement version's window, on a running gateway over HTTP.

The security review saw a version submitted with ``valid_from`` ahead supersede
the version in force at once: the consumer was cut off until the new window
opened, with no way back. And a request under an agreement before its window
was denied with the raw status ``not_yet_valid`` as its message.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from examples.launch import Departments
from gateway.agreements.signing import sign_agreement
from gateway.agreements.terms import AgreementTerms
from gateway.client import Denied
from gateway.demo import demo_agreements
from tests._support.gateway import Gateway, sqlite_gateway
from tests.exchange.conftest import subject_with


@pytest.fixture
def gw(departments: Departments, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with sqlite_gateway(tmp_path_factory.mktemp("gw-validity"), departments.env) as gw:
        yield gw


def _iso(at: datetime) -> str:
    return at.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _lookup(**changes: Any) -> dict[str, Any]:
    """The demo's welfare person lookup, changed."""
    now = datetime.now(UTC)
    doc = demo_agreements(_iso(now - timedelta(days=1)), _iso(now + timedelta(days=365)))[0]
    assert doc["id"] == "welfare-person-lookup"
    doc.update(changes)
    return doc


def _submit(gw: Gateway, doc: dict[str, Any]) -> httpx.Response:
    terms = AgreementTerms.from_json(doc)
    jws = sign_agreement(
        {"payload": "", "signatures": []},
        gw.key(terms.provider),
        party="provider",
        terms=terms,
    )
    jws = sign_agreement(jws, gw.key(terms.consumer), party="consumer")
    return httpx.post(f"{gw.url}/v1/agreements", json=jws.to_json(), headers=gw.staff())


def _ask(gw: Gateway, agreement: str = "welfare-person-lookup") -> Any:
    return gw.client("welfare-office").exchange(
        agreement=agreement,
        dataset="person",
        purpose="benefit-eligibility",
        query={"kind": "record", "subject": subject_with("civil")},
        fields=["given_name"],
    )


def test_future_version_leaves_the_version_in_force_deciding(gw: Gateway) -> None:
    assert _ask(gw).receipt_claims["agreement"] == "welfare-person-lookup@1"
    later = _iso(datetime.now(UTC) + timedelta(days=30))
    r = _submit(gw, _lookup(version=2, valid_from=later))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "not_yet_valid"
    answer = _ask(gw)  # the consumer is not cut off
    assert answer.receipt_claims["agreement"] == "welfare-person-lookup@1"
    shown = httpx.get(f"{gw.url}/v1/agreements/welfare-person-lookup", headers=gw.staff()).json()
    assert (shown["version"], shown["status"]) == (1, "active")


def test_future_version_takes_over_at_its_valid_from(gw: Gateway) -> None:
    assert _ask(gw).receipt_claims["agreement"] == "welfare-person-lookup@1"  # cached now
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    r = _submit(gw, _lookup(version=2, valid_from=_iso(starts)))
    assert r.status_code == 201, r.text
    assert _ask(gw).receipt_claims["agreement"] == "welfare-person-lookup@1"
    # The gateway's own watch records the takeover at valid_from (not at its next
    # minute's tick); the version this node had cached is dropped with it.
    deadline = time.monotonic() + 30
    while (used := _ask(gw).receipt_claims["agreement"]) != "welfare-person-lookup@2":
        assert used == "welfare-person-lookup@1"
        assert time.monotonic() < deadline, "version 2 never took over"
        time.sleep(0.2)
    assert datetime.now(UTC) >= starts
    events = httpx.get(
        f"{gw.url}/v1/agreements/welfare-person-lookup/versions/1/events", headers=gw.staff()
    ).json()
    assert [(e["to_status"], e["actor"]) for e in events][-1] == ("superseded", "system:clock")


def test_expired_version_is_refused_and_the_version_in_force_stays(gw: Gateway) -> None:
    now = datetime.now(UTC)
    window = {"valid_from": _iso(now - timedelta(days=60)), "valid_until": _iso(now)}
    r = _submit(gw, _lookup(version=2, **window))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "agreement_expired"
    assert _ask(gw).receipt_claims["agreement"] == "welfare-person-lookup@1"


def test_request_before_the_window_is_denied_in_words(gw: Gateway) -> None:
    later = _iso(datetime.now(UTC) + timedelta(days=30))
    r = _submit(gw, _lookup(id="welfare-person-later", valid_from=later))
    assert r.status_code == 201, r.text
    with pytest.raises(Denied) as denied:
        _ask(gw, "welfare-person-later")
    problem = denied.value.problem
    assert problem["reasons"] == [
        {"code": "agreement_inactive", "message": "agreement is not yet valid"}
    ]
    assert "not_yet_valid" not in problem["detail"]
