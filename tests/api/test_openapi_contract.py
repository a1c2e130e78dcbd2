"""The published OpenAPI says what the gateway really answers: problem bodies,
the 422 it sends, readiness's 503, and which token each route needs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.api.app import create_app
from gateway.settings import Settings

PROBLEM = {"$ref": "#/components/schemas/Problem"}
TOKEN_ROUTES = [
    ("/v1/exchanges", "post"),
    ("/v1/exchanges/{exchange_id}/receipt", "get"),
    ("/v1/subjects/{subject_key}/accesses", "get"),
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("openapi")
    settings = Settings(dev_mode=True, data_dir=data, database_url=f"sqlite:///{data / 'a.db'}")
    return create_app(settings).openapi()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def test_problem_schema_carries_reasons_policy_version_and_errors(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    props = schemas["Problem"]["properties"]
    for name in ("exchange_id", "errors", "reasons", "policy_version", "code", "status"):
        assert name in props
    reason_ref = props["reasons"]["anyOf"][0]["items"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[reason_ref]["required"]) == {"code", "message"}
    error_ref = props["errors"]["anyOf"][0]["items"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[error_ref]["required"]) == {"field", "reason"}


def test_no_route_keeps_the_frameworks_validation_error(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(spec)
    for path, method, op in _operations(spec):
        response = op["responses"]["422"]
        assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}, path
        assert "validation_failed" in response.get("x-problem-codes", ["validation_failed"])


@pytest.mark.parametrize(
    "path", ["/v1/exchanges/{exchange_id}/receipt", "/v1/subjects/{subject_key}/accesses"]
)
def test_token_routes_declare_their_real_422(spec: dict[str, Any], path: str) -> None:
    response = spec["paths"][path]["get"]["responses"]["422"]
    assert list(response["content"]) == ["application/problem+json"]


def test_every_error_response_has_the_problem_schema(spec: dict[str, Any]) -> None:
    for path, method, op in _operations(spec):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and path != "/readyz":
                assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}, (
                    path,
                    method,
                    status,
                )


def test_readiness_documents_its_503(spec: dict[str, Any]) -> None:
    responses = spec["paths"]["/readyz"]["get"]["responses"]
    ref = {"$ref": "#/components/schemas/Readiness"}
    assert responses["200"]["content"]["application/json"]["schema"] == ref
    assert responses["503"]["content"]["application/json"]["schema"] == ref


def test_request_token_scheme_is_declared_and_applied(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["requestToken"]["scheme"] == "bearer"
    assert "accord-req+jwt" in schemes["requestToken"]["bearerFormat"]
    for path, method in TOKEN_ROUTES:
        assert spec["paths"][path][method]["security"] == [{"requestToken": []}]


def test_staff_routes_need_the_staff_token_and_public_ones_nothing(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    assert paths["/v1/departments"]["post"]["security"] == [{"staffToken": []}]
    assert paths["/v1/policies/{version}/approve"]["post"]["security"] == [{"staffToken": []}]
    assert paths["/v1/audit/entries"]["get"]["security"] == [{"staffToken": []}]
    for public in ("/livez", "/readyz", "/health", "/.well-known/jwks.json", "/v1/departments"):
        assert "security" not in paths[public]["get"], public
