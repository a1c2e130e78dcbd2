"""The receipt and access-log routes are audited like the exchange route, over HTTP.

A refused token there is an ``auth_failure`` under the same flood budget; a
verified system refused is recorded under its name and the subject's pseudonym
(never the key); every access-log read is recorded and not listed back to the
citizen. Also: a NUL in the exchange route's query is answered with an
``exchange_id`` like every exchange answer. Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from audit import AuditLog, engine_for
from examples.launch import Departments
from examples.synth import people
from gateway.auth.requests import sign_request_token
from gateway.jose import generate_private_key
from tests._support.gateway import Gateway, audit_docs
from tests.exchange.attack_support import (
    audit_store_refusing,
    key_id,
    sign_token,
    token_claims,
)
from tests.exchange.conftest import STORES, gateway_on_store, subject_with

BUDGET = 5
ACCESSES = "/v1/subjects/{subject_key}/accesses"
RECEIPT = "/v1/exchanges/{exchange_id}/receipt"
PERSON = {
    "agreement": "welfare-person-lookup",
    "dataset": "person",
    "purpose": "benefit-eligibility",
}


@pytest.fixture(scope="module", params=STORES)
def gw(
    request: pytest.FixtureRequest,
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp(f"gw-reads-{request.param}")
    with gateway_on_store(
        request,
        departments,
        data,
        extra_env={"ACCORD_AUTH_FAILURE_ENTRIES_PER_S": str(BUDGET)},
    ) as g:
        yield g


def _size(gw: Gateway) -> int:
    engine = engine_for(gw.env["ACCORD_DATABASE_URL"])
    log = AuditLog(engine)
    try:
        return log.head().size
    finally:
        log.close()
        engine.dispose()


def _entries(gw: Gateway, since: int = 0) -> list[dict[str, Any]]:
    """The log's entries from ``since``, checkpoints left out."""
    docs = audit_docs(gw.env["ACCORD_DATABASE_URL"], since)
    return [d for d in docs if d["event"] not in ("checkpoint", "witness")]


def _get(gw: Gateway, path: str, token: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(gw.url + path, headers=headers, params=params, timeout=30)


def _token(gw: Gateway, department: str, system: str, path: str) -> str:
    return sign_request_token(
        gw.key(department),
        department=department,
        system=system,
        audience="accord-gateway",
        method="GET",
        path=path,
        body=b"",
    )


def _forged(gw: Gateway, path: str) -> str:
    """Well formed, naming the welfare office's key, signed by someone else."""
    claims = token_claims(b"", htm="GET", htu=path)
    return sign_token(generate_private_key("EdDSA"), claims, kid=key_id(gw.key("welfare-office")))


def _exchange_subject(gw: Gateway, subject: str) -> tuple[str, str]:
    """Release one record about ``subject``: its exchange id and the pseudonym logged."""
    since = _size(gw)
    answer = gw.client("welfare-office").exchange(
        agreement="welfare-person-lookup",
        dataset="person",
        purpose="benefit-eligibility",
        query={"kind": "record", "subject": subject},
    )
    released = [e for e in _entries(gw, since) if e.get("exchange_id") == answer.exchange_id]
    assert released and released[0]["outcome"] == "released"
    return answer.exchange_id, str(released[0]["subject"])


def _refill() -> None:
    time.sleep(1.5)  # the budget refills and any folded window is written


def test_a_forged_token_on_the_access_log_and_receipt_routes_is_an_auth_failure(
    gw: Gateway,
) -> None:
    subject = subject_with("civil")
    accesses = ACCESSES.format(subject_key=subject)
    receipt = RECEIPT.format(exchange_id="0" * 32)
    _refill()
    since = _size(gw)
    r = _get(gw, accesses, _forged(gw, accesses))
    assert (r.status_code, r.json()["code"]) == (401, "signature_invalid")
    r = _get(gw, receipt, "x.y.z")
    assert (r.status_code, r.json()["code"]) == (401, "malformed_token")
    r = _get(gw, accesses, None)
    assert (r.status_code, r.json()["code"]) == (401, "missing_token")

    entries = _entries(gw, since)
    assert [(e["event"], e["outcome"], e["actor"], e["problem"]) for e in entries] == [
        ("auth_failure", "refused", "anonymous", "signature_invalid"),
        ("auth_failure", "refused", "anonymous", "malformed_token"),
        ("auth_failure", "refused", "anonymous", "missing_token"),
    ]
    assert [e["detail"]["route"] for e in entries] == [ACCESSES, RECEIPT, ACCESSES]
    assert all(e["status"] == 401 and e["detail"]["method"] == "GET" for e in entries)
    assert subject not in str(entries)  # the route template, never the path


def test_a_replayed_token_is_an_auth_failure_naming_its_system(gw: Gateway) -> None:
    receipt = RECEIPT.format(exchange_id="f" * 32)
    token = _token(gw, "welfare-office", "benefits-app", receipt)
    _refill()
    since = _size(gw)
    first = _get(gw, receipt, token)
    assert (first.status_code, first.json()["code"]) == (404, "unknown_exchange")
    again = _get(gw, receipt, token)
    assert (again.status_code, again.json()["code"]) == (401, "token_replayed")

    refused, replayed = _entries(gw, since)
    assert (refused["event"], refused["outcome"], refused["problem"]) == (
        "receipt",
        "refused",
        "unknown_exchange",
    )
    assert refused["actor"] == "welfare-office/benefits-app"
    assert refused["detail"]["exchange"] == "f" * 32
    assert (replayed["event"], replayed["problem"]) == ("auth_failure", "token_replayed")
    assert replayed["actor"] == "welfare-office/benefits-app"


def test_asking_for_another_departments_receipt_is_recorded(gw: Gateway) -> None:
    exchange_id, _ = _exchange_subject(gw, subject_with("civil"))
    receipt = RECEIPT.format(exchange_id=exchange_id)
    since = _size(gw)
    mine = _get(gw, receipt, _token(gw, "welfare-office", "benefits-app", receipt))
    assert mine.status_code == 200, mine.text  # a receipt given: not recorded
    theirs = _get(gw, receipt, _token(gw, "tax-authority", "tax-status-service", receipt))
    assert (theirs.status_code, theirs.json()["code"]) == (404, "unknown_exchange")

    [entry] = [e for e in _entries(gw, since) if e["event"] != "exchange"]
    assert (entry["event"], entry["outcome"], entry["actor"]) == (
        "receipt",
        "refused",
        "tax-authority/tax-status-service",
    )
    assert entry["detail"]["exchange"] == exchange_id
    assert "exchange_id" not in entry  # the receipt lookup reads exchange entries only


def test_a_flood_of_forged_tokens_on_these_routes_is_folded(gw: Gateway) -> None:
    subject = subject_with("claims")
    accesses = ACCESSES.format(subject_key=subject)
    receipt = RECEIPT.format(exchange_id="1" * 32)
    _refill()
    since = _size(gw)
    n = 30
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            path = accesses if i % 2 else receipt
            r = client.get(gw.url + path, headers={"Authorization": f"Bearer {_forged(gw, path)}"})
            assert (r.status_code, r.json()["code"]) == (401, "signature_invalid")
    elapsed = time.monotonic() - started
    _refill()

    failures = [e for e in _entries(gw, since) if e["event"] == "auth_failure"]
    alone = [e for e in failures if e["outcome"] == "refused"]
    folded = [e for e in failures if e["outcome"] == "folded"]
    assert len(alone) <= BUDGET + BUDGET * elapsed + 1
    assert folded, "the flood was folded"
    counted = sum(int(p.rsplit(":", 1)[1]) for e in folded for p in e["detail"]["codes"])
    assert counted + len(alone) == n
    assert subject not in str(failures)


def test_a_system_that_is_no_citizen_portal_is_refused_and_recorded_by_name(
    gw: Gateway,
) -> None:
    subject = subject_with("civil")
    _, pseudonym = _exchange_subject(gw, subject)
    accesses = ACCESSES.format(subject_key=subject)
    since = _size(gw)
    r = _get(gw, accesses, _token(gw, "welfare-office", "benefits-app", accesses))
    assert (r.status_code, r.json()["code"]) == (403, "citizen_portal_only")

    [entry] = _entries(gw, since)
    assert (entry["event"], entry["outcome"], entry["status"], entry["problem"]) == (
        "access_log",
        "refused",
        403,
        "citizen_portal_only",
    )
    assert entry["actor"] == "welfare-office/benefits-app"
    assert entry["subject"] == pseudonym
    assert entry["detail"] == {"method": "GET", "route": ACCESSES}
    assert subject not in str(_entries(gw))  # nowhere in the log, in clear


def test_a_portal_read_is_recorded_and_not_listed_back_to_the_citizen(gw: Gateway) -> None:
    subject = people()[1].person_id  # a person of their own: nobody else reads their log
    exchange_id, pseudonym = _exchange_subject(gw, subject)
    portal = gw.client("citizen-portal")
    since = _size(gw)
    first = portal.accesses(subject, limit=10)
    second = portal.accesses(subject, limit=10)
    later = portal.accesses(subject, limit=10, offset=1)

    assert first["accesses"][0]["exchange_id"] == exchange_id
    assert second == first  # the first read is not an access listed back
    assert later["accesses"] == first["accesses"][1:]
    reads = _entries(gw, since)
    assert [(e["event"], e["outcome"], e["actor"], e["subject"]) for e in reads] == [
        ("access_log", "read", "citizen-portal/portal", pseudonym)
    ] * 3
    assert [e["detail"] for e in reads] == [
        {"limit": 10, "offset": 0, "count": first["count"]},
        {"limit": 10, "offset": 0, "count": first["count"]},
        {"limit": 10, "offset": 1, "count": later["count"]},
    ]
    assert subject not in str(reads)


def test_a_read_the_log_does_not_take_shows_nothing(gw: Gateway) -> None:
    subject = subject_with("civil")
    exchange_id, _ = _exchange_subject(gw, subject)
    accesses = ACCESSES.format(subject_key=subject)
    with audit_store_refusing(gw):
        read = _get(gw, accesses, _token(gw, "citizen-portal", "portal", accesses))
        refused = _get(gw, accesses, _token(gw, "welfare-office", "benefits-app", accesses))
    assert (read.status_code, read.json()["code"]) == (503, "audit_unavailable")
    assert "accesses" not in read.json() and exchange_id not in read.text
    # A refusal is still the refusal, marked as the exchange marks it.
    assert (refused.status_code, refused.json()["code"]) == (403, "citizen_portal_only")
    assert refused.json()["audit"] == "unavailable"
    after = _get(gw, accesses, _token(gw, "citizen-portal", "portal", accesses))
    assert after.status_code == 200 and exchange_id in after.text


def test_a_nul_in_the_exchange_query_is_answered_with_an_exchange_id(gw: Gateway) -> None:
    since = _size(gw)
    r = httpx.post(
        gw.url + "/v1/exchanges?x=%00",
        content=b"{}",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert (r.status_code, r.json()["code"]) == (422, "validation_failed")
    exchange_id = r.json()["exchange_id"]
    assert len(exchange_id) == 32 and r.headers["X-Exchange-ID"] == exchange_id
    assert all(e.get("exchange_id") != exchange_id for e in _entries(gw, since))


def test_the_log_still_verifies(gw: Gateway) -> None:
    out = gw.audit_cli("verify")
    assert out.returncode == 0, out.stdout + out.stderr
