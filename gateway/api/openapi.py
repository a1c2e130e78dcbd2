"""The published OpenAPI document: problem answers and security schemes.

FastAPI derives the document from the routes but cannot see what the edges add:
every error is ``application/problem+json`` (``gateway.api.problems``), never
its own ``HTTPValidationError``; the NUL guard can refuse any request with 422;
and who may call a route is decided by a token the route reads itself. This
module writes those into the document once, so no route can forget them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gateway.api.problems import MEDIA_TYPE, Problem

__all__ = [
    "PROBLEM_CODES_KEY",
    "REQUEST_TOKEN",
    "STAFF_TOKEN",
    "install_openapi",
    "problem",
]

#: Response extension listing the stable problem codes an answer of that status may carry.
PROBLEM_CODES_KEY = "x-problem-codes"
#: Names of the security schemes (not secrets).
REQUEST_TOKEN = "requestToken"  # noqa: S105
STAFF_TOKEN = "staffToken"  # noqa: S105
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

SECURITY_SCHEMES: dict[str, Any] = {
    REQUEST_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWS compact, typ accord-req+jwt",
        "description": (
            "A department system's single-use request token: JWS compact with header "
            "`typ: accord-req+jwt`, `alg` EdDSA or ES256, `kid` of a registered key of "
            "the `iss` department; claims `iss`, `sub`, `aud`, `iat`, `exp` (at most "
            "300 s after `iat`), `jti` (8-128 characters, single use), and `htm`, `htu`, "
            "`bsh` binding it to this method, path and body (docs/exchange.md)."
        ),
    },
    STAFF_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": (
            "A person's token from the organisation's OIDC issuer (the dev issuer in "
            "dev mode) carrying the roles the route needs: admin, officer or auditor."
        ),
    },
}


def problem(description: str, codes: Iterable[str] = ()) -> dict[str, Any]:
    """An error response declaration: problem+json, with the codes it may carry."""
    listed = list(codes)
    response: dict[str, Any] = {
        "description": description + (": " + ", ".join(listed) if listed else ""),
        "content": {MEDIA_TYPE: {"schema": PROBLEM_REF}},
    }
    if listed:
        response[PROBLEM_CODES_KEY] = listed
    return response


VALIDATION_FAILED = problem(
    "Invalid input, or U+0000 anywhere in the request", ["validation_failed"]
)
STORE_UNAVAILABLE = "store_unavailable"
#: Routes that read or write the gateway's database (``gateway.api.problems``).
STORE_ROUTES = "/v1/"


def _uses(dependant: Dependant, prefix: str) -> bool:
    for dep in dependant.dependencies:
        name = getattr(dep.call, "__name__", "")
        if name.startswith(prefix) or _uses(dep, prefix):
            return True
    return False


def _security(route: APIRoute) -> list[dict[str, list[str]]] | None:
    if route.openapi_extra and "security" in route.openapi_extra:
        return None  # declared by the route itself
    if _uses(route.dependant, "require_"):
        return [{STAFF_TOKEN: []}]
    return None


def _problem_content(status: str, response: dict[str, Any]) -> None:
    """Errors are problem+json unless the route declared another body (``/readyz``'s 503)."""
    if len(status) != 3 or status[0] not in "45" or not status.isdigit():
        return
    content = response.get("content")
    if not content or "HTTPValidationError" in str(content):
        response["content"] = {MEDIA_TYPE: {"schema": PROBLEM_REF}}
    if status == "422" and response.get("description") == "Validation Error":
        response.update(VALIDATION_FAILED)


def _store_unavailable(responses: dict[str, Any]) -> None:
    """Any route on the database may answer 503 ``store_unavailable`` when it is down."""
    declared = responses.get("503")
    if declared is None:
        responses["503"] = problem("The gateway's store is unavailable", [STORE_UNAVAILABLE])
        return
    codes = declared.setdefault(PROBLEM_CODES_KEY, [])
    if STORE_UNAVAILABLE not in codes:
        declared[PROBLEM_CODES_KEY] = [*codes, STORE_UNAVAILABLE]


def _document(routers: Sequence[APIRouter], schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    routes = [r for router in routers for r in router.routes]
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = schema["paths"][route.path_format].get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("422", dict(VALIDATION_FAILED))
            if route.path_format.startswith(STORE_ROUTES):
                _store_unavailable(responses)
            for status, response in responses.items():
                _problem_content(status, response)
            security = _security(route)
            if security is not None:
                operation["security"] = security


def install_openapi(
    app: FastAPI, routers: Sequence[APIRouter], extra_schemas: dict[str, Any]
) -> None:
    """Make ``app.openapi()`` publish the document as the gateway really answers.

    ``routers`` are the routers ``app`` includes, unprefixed: their routes carry
    the dependencies that say which token a route needs.
    """
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = base()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(extra_schemas)
        _document(routers, schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
