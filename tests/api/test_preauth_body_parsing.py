"""A staff route refuses a bad token before it reads the body, over HTTP.

FastAPI reads and parses a route's JSON body before the route's role check runs,
so anyone who reached the port could make the gateway parse a megabyte of JSON
on its event loop before being told their token was no good, and a malformed
body answered 400 instead of 401, unaudited. The staff check now runs first:
these tests show it by behaviour (what is answered, and that it is answered
before the body has arrived), never by timing.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.auth.humans import dev_issuer_key, issue_dev_token
from tests._support.gateway import Gateway, sqlite_gateway

DRAFTS = "/v1/agreements/drafts"
#: A megabyte of JSON that does not parse (the closing bracket is missing).
MALFORMED = b"[" + b",".join([b'{"a":[1,2,3,"xxxxxxxx"]}'] * 40000)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-preauth")
    with sqlite_gateway(data, extra_env={"ACCORD_MAX_BODY_BYTES": str(2 * 1024 * 1024)}) as gateway:
        yield gateway


def _person(gw: Gateway, *roles: str) -> dict[str, str]:
    key = dev_issuer_key(gw.data_dir / "keys")
    token = issue_dev_token(key, subject="tester", roles=list(roles), audience="accord")
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = response.json()
    assert doc["code"] == code and doc["type"] == f"urn:accord:problem:{code}"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return doc


def _audit_size(gw: Gateway) -> int:
    r = httpx.get(
        f"{gw.url}/v1/audit/entries", params={"start": 0, "end": 1}, headers=_person(gw, "auditor")
    )
    assert r.status_code == 200, r.text
    size: int = r.json()["size"]
    return size


def _entries_since(gw: Gateway, start: int) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{gw.url}/v1/audit/entries",
        params={"start": start, "end": start + 50},
        headers=_person(gw, "auditor"),
    )
    assert r.status_code == 200, r.text
    return [e["entry"] for e in r.json()["entries"]]


def test_malformed_body_without_a_token_is_401_not_400(gw: Gateway) -> None:
    r = httpx.post(gw.url + DRAFTS, content=MALFORMED, headers={"Content-Type": "application/json"})
    _problem(r, 401, "missing_token")


def test_malformed_body_with_a_bad_token_is_401_and_audited(gw: Gateway) -> None:
    before = _audit_size(gw)
    r = httpx.post(
        gw.url + DRAFTS,
        content=b"{not json",
        headers={"Authorization": "Bearer x.y.z", "Content-Type": "application/json"},
    )
    _problem(r, 401, "malformed_token")
    refused = [
        e
        for e in _entries_since(gw, before)
        if e["event"] == "auth_failure" and e["detail"].get("route") == DRAFTS
    ]
    assert refused, "the refused attempt has no auth_failure entry"
    assert refused[0]["actor"] == "anonymous" and refused[0]["outcome"] == "refused"


def test_malformed_body_from_a_person_without_the_role_is_403_not_400(gw: Gateway) -> None:
    r = httpx.post(gw.url + DRAFTS, content=MALFORMED, headers=_person(gw, "auditor"))
    _problem(r, 403, "role_required")


def test_malformed_body_from_an_admin_is_still_400(gw: Gateway) -> None:
    """An authenticated caller's body is parsed as before."""
    r = httpx.post(gw.url + DRAFTS, content=b"{not json", headers=_person(gw, "admin"))
    _problem(r, 400, "malformed_json")


def test_public_route_of_a_staff_prefix_needs_no_token(gw: Gateway) -> None:
    """Only the routes that need a role are checked first: the department list is public."""
    assert httpx.get(gw.url + "/v1/departments").status_code == 200
    r = httpx.post(gw.url + "/v1/departments", json={"id": "x"})
    _problem(r, 401, "missing_token")


def test_bad_token_is_refused_before_the_body_arrives(gw: Gateway) -> None:
    """Headers announce a megabyte, a few bytes follow: the 401 comes without the rest.

    A gateway that read the body first would wait for it (the socket timeout
    below is the bound; the body deadline is the default 20 s, longer).
    """
    head = (
        f"POST {DRAFTS} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Authorization: Bearer x.y.z\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b'{"terms": ')
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, "the gateway closed the connection without answering"
            answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 401"), answer
        length = int(
            next(
                line.split(b":", 1)[1]
                for line in rest.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        body = answer.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            chunk = sock.recv(4096)
            assert chunk
            body += chunk
    assert json.loads(body)["code"] == "malformed_token"
