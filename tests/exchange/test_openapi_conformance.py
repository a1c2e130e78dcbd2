"""Schemathesis against the published OpenAPI, with real credentials on every call.

Exchange and subject routes get a fresh single-use request token bound to the
generated method, path and body; the administrative routes get a human token
holding every role. Whatever the generated input, the gateway must not answer
5xx, and every answer must match the documented status codes, media types and
schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core import NOT_SET

from examples.launch import Departments
from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.auth.requests import sign_request_token
from tests._support.gateway import Gateway, running_gateway
from tests._support.servers import fresh_database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest,
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """On both stores: an exchange is admitted differently on each."""
    data = tmp_path_factory.mktemp("gw-openapi")
    if request.param == "sqlite":
        db_url = f"sqlite:///{data / 'accord.db'}"
    else:
        db_url = fresh_database(request.getfixturevalue("pg_server_url"))
    with running_gateway(db_url=db_url, data_dir=data, departments_env=departments.env) as gw:
        yield gw


@pytest.fixture(scope="module")
def api_schema(api: Gateway) -> Any:
    return schemathesis.openapi.from_url(api.url + "/openapi.json")


def _headers(api: Gateway, method: str, path: str, body: bytes) -> dict[str, str]:
    if path.startswith("/v1/exchanges") or path.startswith("/v1/subjects"):
        department, system = (
            ("citizen-portal", "portal")
            if path.startswith("/v1/subjects")
            else ("welfare-office", "benefits-app")
        )
        token = sign_request_token(
            api.key(department),
            department=department,
            system=system,
            audience="accord-gateway",
            method=method,
            path=path,
            body=body,
        )
    else:
        token = issue_dev_token(
            dev_issuer_key(api.data_dir / "keys"),
            subject="schemathesis",
            roles=["admin", "officer", "auditor"],
            audience="accord",
        )
    return {"Authorization": f"Bearer {token}"}


#: What the issue asks: no server errors, and answers exactly as documented.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def _check(case: Any, api: Gateway) -> None:
    body = b""
    headers: dict[str, str] = {}
    if case.body is not None and not isinstance(case.body, type(NOT_SET)):
        body = json.dumps(case.body).encode()
        headers["Content-Type"] = "application/json"
    path = case.formatted_path
    headers.update(_headers(api, case.method.upper(), path, body))
    response = httpx.request(
        case.method,
        api.url + path,
        params=case.query or None,
        content=body or None,
        headers=headers,
        timeout=30,
    )
    assert response.status_code < 500, f"{case.method} {path}: {response.text[:500]}"
    case.validate_response(response, checks=CHECKS)


def test_every_route_answers_as_documented(api: Gateway, api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert any(op.path == "/v1/exchanges" for op in operations)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            _check(case, api)

        run()
