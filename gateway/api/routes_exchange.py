"""The exchange API: department systems ask for data, receipts, and citizens' access logs.

Department systems authenticate each call with a single-use request token
(``Authorization: Bearer <JWS>``, profile in gateway/auth/requests.py) bound to
the method, path and body, so handlers read the raw body and hand it, unparsed,
to the service: the token is checked against the exact bytes that were sent.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.api.deps import get_services, require_role
from gateway.auth.humans import Principal
from gateway.auth.requests import Caller
from gateway.errors import AccordError, AuthError, ForbiddenError, ValidationFailed
from gateway.exchange.models import ConsumerMappingCreate, DatasetBindingCreate
from gateway.exchange.schemas import ExchangeRequest, ExchangeResponse
from gateway.jose import public_jwk

__all__ = ["router"]

router = APIRouter(tags=["exchange"])
Admin = Annotated[Principal, Depends(require_role("admin"))]


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


EXCHANGE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _problem("malformed_json"),
    401: _problem(
        "missing_token, malformed_token, bad_algorithm, wrong_token_type, unknown_key, "
        "key_revoked, key_expired, token_expired, token_not_yet_valid, "
        "token_lifetime_too_long, wrong_audience, token_replayed, token_request_mismatch, "
        "body_mismatch, signature_invalid, unknown_system"
    ),
    403: _problem(
        "policy_denied, with every reason in `reasons`: no_agreement, agreement_inactive, "
        "wrong_consumer, dataset_not_covered, field_not_permitted, purpose_not_permitted, "
        "classification_exceeds_ceiling, clearance_insufficient, caveat_missing, "
        "legal_basis_required, quota_exceeded, aggregate_not_permitted, aggregate_below_k"
    ),
    404: _problem("subject_not_found, dataset_not_bound, unknown_target_schema"),
    413: _problem("body_too_large"),
    415: _problem("unsupported_media_type"),
    422: _problem(
        "validation_failed, predicate_invalid, predicate_not_allowed, aggregate_not_allowed, "
        "release_refused, invalid_key"
    ),
    502: _problem(
        "connector_unavailable, connector_bad_response, response_too_large, unsafe_content, "
        "mapping_error, connector_circuit_open, connector_auth_failed"
    ),
    503: _problem("policy_error, audit_unavailable, store_unavailable"),
    504: _problem("connector_timeout"),
}

ADMIN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _problem("missing_token, invalid token"),
    403: _problem("role_required"),
    404: _problem("unknown_department"),
    422: _problem("validation_failed, mapping_invalid, connector_config_invalid"),
}

_REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExchangeRequest"}}},
}


class UnsupportedMediaType(AccordError):
    status = 415
    default_code = "unsupported_media_type"
    title = "Unsupported media type"


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@router.post(
    "/v1/exchanges",
    response_model=ExchangeResponse,
    responses=EXCHANGE_PROBLEMS,
    summary="Exchange data under a signed agreement",
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def post_exchange(request: Request) -> JSONResponse:
    """Authenticate, decide, fetch, translate, release, audit; answer with a signed receipt."""
    services = get_services(request)
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    exchange = services.exchange
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("exchange requests are application/json")
    answer = await exchange.run(
        token=_bearer(request), method="POST", path=request.url.path, body=body
    )
    request.state.exchange_id = answer.exchange_id
    return JSONResponse(answer.body, headers={"X-Exchange-ID": answer.exchange_id})


async def _system(request: Request, body: bytes = b"") -> Caller:
    services = get_services(request)
    token = _bearer(request)
    if token is None:
        raise AuthError("a request token is required", code="missing_token")
    return await asyncio.to_thread(
        services.exchange.verify_caller,
        token,
        method=request.method,
        path=request.url.path,
        body=body,
    )


class ReceiptWithProof(BaseModel):
    exchange_id: str
    receipt: str
    seq: int
    #: RFC 9162 inclusion proof against the latest checkpoint covering the entry (or null)
    inclusion_proof: dict[str, Any] | None


@router.get(
    "/v1/exchanges/{exchange_id}/receipt",
    response_model=ReceiptWithProof,
    responses={401: _problem("request token"), 404: _problem("unknown_exchange")},
    summary="The exchange's receipt, with an inclusion proof once a checkpoint covers it",
)
async def get_receipt(request: Request, exchange_id: str) -> ReceiptWithProof:
    caller = await _system(request)
    services = get_services(request)
    found = await asyncio.to_thread(services.exchange.receipt_for, exchange_id, caller.department)
    return ReceiptWithProof(**found)


class JWKSet(BaseModel):
    keys: list[dict[str, Any]]


@router.get(
    "/.well-known/jwks.json",
    response_model=JWKSet,
    summary="The gateway's public keys (receipts are signed with these)",
)
def gateway_jwks(request: Request) -> JWKSet:
    return JWKSet(keys=[public_jwk(get_services(request).gateway_key)])


class Accesses(BaseModel):
    accesses: list[dict[str, Any]]
    limit: int
    offset: int
    count: int


@router.get(
    "/v1/subjects/{subject_key}/accesses",
    response_model=Accesses,
    responses={401: _problem("request token"), 403: _problem("citizen_portal_only")},
    summary="Who accessed this person's data, when, and why (newest first)",
)
async def subject_accesses(
    request: Request,
    subject_key: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Accesses:
    caller = await _system(request)
    if "citizen_portal" not in caller.capabilities:
        raise ForbiddenError(
            "only a registered citizen-portal system may read access logs",
            code="citizen_portal_only",
        )
    services = get_services(request)
    found = await asyncio.to_thread(
        services.exchange.accesses, subject_key, caller=caller, limit=limit, offset=offset
    )
    return Accesses(**found)


@router.put(
    "/v1/departments/{provider}/datasets/{dataset_id}",
    status_code=200,
    responses=ADMIN_PROBLEMS,
    summary="Bind a provider's dataset to its connector and mapping",
)
def put_binding(
    request: Request, provider: str, dataset_id: str, body: DatasetBindingCreate, who: Admin
) -> dict[str, Any]:
    if body.dataset_id != dataset_id:
        raise ValidationFailed("the path and body name different datasets", code="dataset_mismatch")
    services = get_services(request)
    services.registry.get_department(provider)
    row = services.bindings.put_binding(provider, body, actor=who.actor)
    return {"provider": row.provider, "dataset_id": row.dataset_id, "model": row.model}


@router.put(
    "/v1/departments/{consumer}/mappings/{name}",
    status_code=200,
    responses=ADMIN_PROBLEMS,
    summary="Register a consumer's own record schema (canonical -> consumer mapping)",
)
def put_consumer_mapping(
    request: Request, consumer: str, name: str, body: ConsumerMappingCreate, who: Admin
) -> dict[str, Any]:
    if body.name != name:
        raise ValidationFailed("the path and body name different mappings", code="mapping_mismatch")
    services = get_services(request)
    services.registry.get_department(consumer)
    row = services.bindings.put_consumer_mapping(consumer, body, actor=who.actor)
    return {"consumer": row.consumer, "name": row.name}


def exchange_schemas() -> dict[str, Any]:
    """Component schemas the hand-read request body refers to (merged into OpenAPI)."""
    schema = ExchangeRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"ExchangeRequest": schema, **defs}
