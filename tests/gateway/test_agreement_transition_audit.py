"""Every refused change of an agreement version's status is on record.

From an auditor's review: a refused submission was an ``agreement_change`` entry,
but a refused suspension, reactivation or revocation left no trace, nor did a
body refused on that route before it ran. Both are entries now, shaped like a
refused submission's: the problem, the status, the actor, the SHA-256 and size of
the body as sent; never the path or the body.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from gateway.errors import ConflictError
from tests.gateway.conftest import Parties
from tests.gateway.test_agreement_submission_audit import (
    HOSTILE,
    JSON_TYPE,
    MARKER,
    _admin,
    _log,
    _refusals,
    env,
)
from tests.gateway.test_api_admin import assert_problem, bearer

__all__ = ["env"]  # the fixture, shared with the submission tests

STATUS = "/v1/agreements/{}/versions/{}/status"


def _in_force(parties: Parties) -> None:
    parties.services.agreements.submit(parties.sign(parties.terms()), actor="test")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "whole"),
    [h[1:] for h in HOSTILE],
    ids=[h[0] for h in HOSTILE],
)
def test_status_change_refused_before_its_route_runs_is_audited(
    env: tuple[TestClient, Parties],
    body: bytes,
    content_type: str,
    status: int,
    code: str,
    whole: bool,
) -> None:
    client, parties = env
    services = parties.services
    _in_force(parties)
    headers = {**_admin(services), "content-type": content_type}
    path = STATUS.format("person-lookup", 1)
    assert_problem(client.post(path, content=body, headers=headers), status, code)
    [entry] = _refusals(services)
    assert entry["actor"] == "user:carol"
    assert (entry["problem"], entry["status"]) == (code, status)
    assert entry["detail"]["submission"] == "transition"
    assert "agreement" not in entry and "provider" not in entry
    if whole:
        assert entry["request_sha256"] == hashlib.sha256(body).hexdigest()
        assert entry["detail"]["body_bytes"] == len(body)
    else:
        assert "request_sha256" not in entry
    assert not any(MARKER.encode() in data for data in _log(services))


def test_reactivating_an_agreement_not_suspended_is_refused_and_audited(
    env: tuple[TestClient, Parties],
) -> None:
    client, parties = env
    services = parties.services
    _in_force(parties)
    sent = b'{"reason": "' + MARKER.encode() + b'",\n "status": "active"}'
    r = client.post(
        STATUS.format("person-lookup", 1), content=sent, headers={**_admin(services), **JSON_TYPE}
    )
    assert_problem(r, 409, "bad_transition")
    [entry] = _refusals(services)
    assert (entry["actor"], entry["problem"], entry["status"]) == (
        "user:carol",
        "bad_transition",
        409,
    )
    assert entry["request_sha256"] == hashlib.sha256(sent).hexdigest()
    assert entry["detail"] == {
        "submission": "transition",
        "to_status": "active",
        "body_bytes": len(sent),
    }
    assert entry["agreement"] == "person-lookup@1"
    assert (entry["provider"], entry["consumer"]) == ("civil-registry", "welfare-office")
    assert not any(MARKER.encode() in data for data in _log(services))
    assert (
        client.get("/v1/agreements/person-lookup", headers=_admin(services)).json()["status"]
        == "active"
    )


def test_status_change_of_an_unknown_agreement_names_nothing_sent(
    env: tuple[TestClient, Parties],
) -> None:
    client, parties = env
    services = parties.services
    sent = json.dumps({"status": "suspended", "reason": "x"}).encode()
    r = client.post(
        STATUS.format(MARKER, 7), content=sent, headers={**_admin(services), **JSON_TYPE}
    )
    assert_problem(r, 404, "unknown_agreement")
    [entry] = _refusals(services)
    assert entry["problem"] == "unknown_agreement"
    assert entry["request_sha256"] == hashlib.sha256(sent).hexdigest()
    assert "agreement" not in entry
    assert not any(MARKER.encode() in data for data in _log(services))


def test_status_change_refused_by_auth_is_not_a_refused_change(
    env: tuple[TestClient, Parties],
) -> None:
    """401 and 403 stay ``StaffAuthFirst``'s entries (``auth_failure``, ``admin``)."""
    client, parties = env
    services = parties.services
    _in_force(parties)
    path = STATUS.format("person-lookup", 1)
    sent = {"status": "suspended", "reason": "x"}
    assert_problem(client.post(path, json=sent), 401, "missing_token")
    officer = bearer(services, "officer", sub="olga")
    r = client.post(path, json=sent, headers=officer)
    assert r.status_code == 403, r.text
    assert _refusals(services) == []


def test_status_change_refused_in_process_is_audited_without_a_hash(parties: Parties) -> None:
    """``accord agreement status`` calls the service: it sent no request to hash."""
    _in_force(parties)
    agreements = parties.services.agreements
    with pytest.raises(ConflictError):
        agreements.transition("person-lookup", 1, "active", actor="cli:operator", reason="r")
    [entry] = _refusals(parties.services)
    assert (entry["actor"], entry["problem"]) == ("cli:operator", "bad_transition")
    assert "request_sha256" not in entry
    assert entry["detail"] == {"submission": "transition", "to_status": "active"}
