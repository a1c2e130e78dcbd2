"""Which answers carry an ``exchange_id``, over HTTP against a running gateway.

Every answer of ``POST /v1/exchanges`` carries one in its body and in
``X-Exchange-ID``, including the 413 and 415 given before the exchange flow
runs; the receipt and access-log routes are not exchanges and carry none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.auth.requests import sign_request_token
from tests._support.gateway import Gateway, sqlite_gateway

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """SQLite and the embedded engine; no department system is needed here."""
    data = tmp_path_factory.mktemp("gw-ids")
    with sqlite_gateway(data, extra_env={"ACCORD_MAX_BODY_BYTES": "4096"}) as gateway:
        yield gateway


def _token(gw: Gateway, department: str, system: str, method: str, path: str, body: bytes) -> str:
    return sign_request_token(
        gw.key(department),
        department=department,
        system=system,
        audience="accord-gateway",
        method=method,
        path=path,
        body=body,
    )


def _assert_exchange_id(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["code"] == code
    assert len(problem["exchange_id"]) == 32
    assert response.headers["X-Exchange-ID"] == problem["exchange_id"]
    return str(problem["exchange_id"])


def test_body_too_large_on_the_exchange_route_carries_an_exchange_id(gw: Gateway) -> None:
    body = b'{"pad": "' + b"x" * 8000 + b'"}'
    headers = {"Content-Type": "application/json"}
    first = httpx.post(gw.url + "/v1/exchanges", content=body, headers=headers)
    second = httpx.post(gw.url + "/v1/exchanges", content=body, headers=headers)
    ids = {_assert_exchange_id(r, 413, "body_too_large") for r in (first, second)}
    assert len(ids) == 2  # a fresh id each time


def test_body_too_large_without_a_length_is_413_not_500(gw: Gateway) -> None:
    """A chunked body (no Content-Length) is counted as it arrives."""

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = httpx.post(
        gw.url + "/v1/exchanges", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _assert_exchange_id(response, 413, "body_too_large")


def test_unsupported_media_type_carries_an_exchange_id(gw: Gateway) -> None:
    response = httpx.post(
        gw.url + "/v1/exchanges", content=b"a=b", headers={"Content-Type": "text/plain"}
    )
    _assert_exchange_id(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(("jti", "code"), [(None, "missing_token"), ("abc", "invalid_token")])
def test_refused_tokens_carry_the_flows_exchange_id(
    gw: Gateway, jti: str | None, code: str
) -> None:
    body = json.dumps({"agreement": "x", "dataset": "y", "purpose": "z"}).encode()
    headers = {"Content-Type": "application/json"}
    if jti is not None:
        token = sign_request_token(
            gw.key("welfare-office"),
            department="welfare-office",
            system="benefits-app",
            audience="accord-gateway",
            method="POST",
            path="/v1/exchanges",
            body=body,
            jti=jti,
        )
        headers["Authorization"] = f"Bearer {token}"
    response = httpx.post(gw.url + "/v1/exchanges", content=body, headers=headers)
    _assert_exchange_id(response, 401, code)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_receipt_and_access_routes_carry_no_exchange_id(gw: Gateway) -> None:
    unknown = "0" * 32
    path = f"/v1/exchanges/{unknown}/receipt"
    token = _token(gw, "welfare-office", "benefits-app", "GET", path, b"")
    response = httpx.get(gw.url + path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_exchange"
    assert "exchange_id" not in response.json()
    assert "X-Exchange-ID" not in response.headers

    path = "/v1/subjects/85442997376/accesses"
    token = _token(gw, "welfare-office", "benefits-app", "GET", path, b"")
    response = httpx.get(gw.url + path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json()["code"] == "citizen_portal_only"
    assert "exchange_id" not in response.json()

    response = httpx.get(gw.url + path)
    assert response.status_code == 401
    assert "exchange_id" not in response.json()
    assert "X-Exchange-ID" not in response.headers


def test_body_too_large_elsewhere_carries_no_exchange_id(gw: Gateway) -> None:
    # A staff route checks the person's token before the body (else 401).
    token = issue_dev_token(
        dev_issuer_key(gw.data_dir / "keys"), subject="t", roles=["auditor"], audience="accord"
    )
    response = httpx.post(
        gw.url + "/v1/agreements/verify",
        content=b"x" * 8000,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 413
    assert "exchange_id" not in response.json()
    assert "X-Exchange-ID" not in response.headers
