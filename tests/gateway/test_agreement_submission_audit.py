"""Every refused agreement submission is on record, and hashed as it was sent.

From an auditor's review: a submission or draft refused before its route ran (a
body too large, not JSON, not the shape the route takes, carrying a NUL) left no
trace in the audit log, though one refused by the agreement service did; and
the ``request_sha256`` of a refused submission hashed the JSON re-serialised with
sorted keys, which no one holding the bytes sent could reproduce.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.services import Services, build_services
from gateway.settings import Settings
from tests._support.gateway import serving_in_thread
from tests.gateway.conftest import Clock, Parties, register_parties
from tests.gateway.test_api_admin import assert_problem, bearer

AGREEMENTS = "/v1/agreements"
DRAFTS = "/v1/agreements/drafts"
#: Small enough that a test body can exceed it, large enough for any agreement.
MAX_BODY = 16 * 1024
#: Written into each hostile body: nothing of it may reach the log.
MARKER = "zz-hostile-marker-zz"
JSON_TYPE = {"content-type": "application/json"}


@pytest.fixture
def env(db_url: str, tmp_path: Path, clock: Clock) -> Iterator[tuple[TestClient, Parties]]:
    """The app on SQLite and PostgreSQL, with bodies limited to ``MAX_BODY``."""
    settings = Settings(
        dev_mode=True, database_url=db_url, data_dir=tmp_path, max_body_bytes=MAX_BODY
    )
    services = build_services(settings)
    services.registry.clock = clock
    services.agreements.clock = clock
    parties = register_parties(services)
    with TestClient(create_app(services=services)) as client:
        yield client, parties
    services.close()


def _admin(services: Services) -> dict[str, str]:
    return bearer(services, "admin", sub="carol")


def _log(services: Services) -> list[bytes]:
    size = services.audit_log.head().size
    return [e.entry_bytes for e in services.audit_log.entries(0, size)]


def _refusals(services: Services) -> list[dict[str, Any]]:
    docs = [json.loads(data) for data in _log(services)]
    return [d for d in docs if d["event"] == "agreement_change" and d["outcome"] == "refused"]


#: (id, body, content type, status, code, whether it arrives whole)
HOSTILE: list[tuple[str, bytes, str, int, str, bool]] = [
    ("not_json", b'{"' + MARKER.encode() + b'": ', "application/json", 400, "malformed_json", True),
    (
        "not_utf8",
        b'{"' + MARKER.encode() + b'": "\xff"}',
        "application/json",
        400,
        "bad_request",
        True,
    ),
    (
        "json_array",
        b'["' + MARKER.encode() + b'"]',
        "application/json",
        422,
        "validation_failed",
        True,
    ),
    (
        "text_plain",
        b'{"' + MARKER.encode() + b'": 1}',
        "text/plain",
        422,
        "validation_failed",
        True,
    ),
    (
        "nul",
        b'{"' + MARKER.encode() + b'": "\\u0000"}',
        "application/json",
        422,
        "validation_failed",
        True,
    ),
    (
        "too_large",
        b'{"' + MARKER.encode() + b'": "' + b"x" * MAX_BODY + b'"}',
        "application/json",
        413,
        "body_too_large",
        False,
    ),
]


@pytest.mark.parametrize(("path", "kind"), [(AGREEMENTS, "signed"), (DRAFTS, "draft")])
@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "whole"),
    [h[1:] for h in HOSTILE],
    ids=[h[0] for h in HOSTILE],
)
def test_submission_refused_before_its_route_runs_is_audited(
    env: tuple[TestClient, Parties],
    path: str,
    kind: str,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
    whole: bool,
) -> None:
    client, parties = env
    services = parties.services
    before = len(_refusals(services))
    headers = {**_admin(services), "content-type": content_type}
    assert_problem(client.post(path, content=body, headers=headers), status, code)
    entries = _refusals(services)
    assert len(entries) == before + 1
    entry = entries[-1]
    assert entry["actor"] == "user:carol"
    assert (entry["problem"], entry["status"]) == (code, status)
    assert entry["detail"]["submission"] == kind
    assert "agreement" not in entry and "provider" not in entry
    if whole:
        assert entry["request_sha256"] == hashlib.sha256(body).hexdigest()
        assert entry["detail"]["body_bytes"] == len(body)
    else:  # refused on its declared length: nothing of it was read
        assert "request_sha256" not in entry
        assert entry["detail"]["body_bytes"] == 0
    assert not any(MARKER.encode() in data for data in _log(services))


def test_refusals_of_other_routes_add_no_agreement_entry(
    env: tuple[TestClient, Parties],
) -> None:
    """The audit of unread submissions is for the agreement change routes alone
    (the status route's: ``test_agreement_transition_audit``)."""
    client, parties = env
    services = parties.services
    size = services.audit_log.head().size
    headers = {**_admin(services), **JSON_TYPE}
    assert_problem(
        client.post("/v1/departments", content=b'{"', headers=headers), 400, "malformed_json"
    )
    assert_problem(
        client.post(f"{AGREEMENTS}/verify", content=b'{"', headers=headers), 400, "malformed_json"
    )
    assert services.audit_log.head().size == size


def test_unauthenticated_submission_is_an_auth_failure_not_a_refused_change(
    env: tuple[TestClient, Parties],
) -> None:
    """A sender without a token is refused (401) before its body is read, as before."""
    client, parties = env
    services = parties.services
    r = client.post(AGREEMENTS, content=b'{"', headers=JSON_TYPE)
    assert_problem(r, 401, "missing_token")
    assert _refusals(services) == []


def _unusual(doc: dict[str, Any]) -> bytes:
    """``doc`` as a person might type it: keys reversed, odd whitespace, escapes."""
    text = json.dumps(dict(reversed(list(doc.items()))), indent="\t", ensure_ascii=True)
    return ("\r\n  " + text.replace(": ", " :   ") + " \n\n").encode()


def test_refused_submission_hashes_the_bytes_sent(env: tuple[TestClient, Parties]) -> None:
    client, parties = env
    services = parties.services
    signed = parties.sign(parties.terms(valid_until="2026-02-01T00:00:00Z"))  # expired
    sent = _unusual(signed)
    assert json.loads(sent) == signed
    r = client.post(AGREEMENTS, content=sent, headers={**_admin(services), **JSON_TYPE})
    assert_problem(r, 422, "agreement_expired")
    [entry] = _refusals(services)
    assert entry["request_sha256"] == hashlib.sha256(sent).hexdigest()
    assert entry["detail"]["body_bytes"] == len(sent)
    assert entry["agreement"] == "person-lookup@1"


def test_refused_draft_hashes_the_bytes_sent(env: tuple[TestClient, Parties]) -> None:
    client, parties = env
    services = parties.services
    sent = _unusual({"terms": parties.terms(provider="no-such-department")})
    r = client.post(DRAFTS, content=sent, headers={**_admin(services), **JSON_TYPE})
    assert r.status_code in (404, 422), r.text
    [entry] = _refusals(services)
    assert entry["problem"] == r.json()["code"]
    assert entry["request_sha256"] == hashlib.sha256(sent).hexdigest()
    assert entry["detail"]["submission"] == "draft"


def test_body_too_slow_is_audited_before_the_answer(sqlite_url: str, tmp_path: Path) -> None:
    """Over HTTP (the deadline needs a real socket): the 408's entry is in the log by
    the time the answer arrives, with what had arrived counted and nothing hashed."""
    settings = Settings(
        dev_mode=True, database_url=sqlite_url, data_dir=tmp_path, body_timeout_s=0.5
    )
    services = build_services(settings)
    try:
        with serving_in_thread(services) as url:
            host, port = url.removeprefix("http://").split(":")
            sent = b'{"' + MARKER.encode() + b'": '
            head = [
                "POST /v1/agreements/drafts HTTP/1.1",
                "Host: test",
                "Content-Type: application/json",
                "Content-Length: 1000",
                f"Authorization: {_admin(services)['Authorization']}",
            ]
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + sent)
                answer = sock.recv(65536)  # the gateway answers once the deadline passes
            assert answer.startswith(b"HTTP/1.1 408"), answer
            [entry] = _refusals(services)
    finally:
        services.close()
    assert (entry["problem"], entry["status"]) == ("body_timeout", 408)
    assert entry["actor"] == "user:carol"
    assert "request_sha256" not in entry
    assert entry["detail"] == {"submission": "draft", "body_bytes": len(sent)}
