"""The exchange API: department systems ask for data, receipts, and citizens' access logs.

Department systems authenticate each call with a single-use request token
(``Authorization: Bearer <JWS>``, profile in gateway/auth/requests.py) bound to
the method, path and body, so handlers read the raw body and hand it, unparsed,
to the service: the token is checked against the exact bytes that were sent.
The exchange flow audits its own refusals; the receipt and access-log handlers
hand theirs to the same ``RefusalRecorder`` (``_refused``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.api.deps import get_services, require_role
from gateway.api.openapi import REQUEST_TOKEN, problem
from gateway.api.problems import new_exchange_id
from gateway.auth.humans import Principal
from gateway.auth.requests import Caller
from gateway.errors import AccordError, AuthError, ForbiddenError, ValidationFailed
from gateway.exchange.models import ConsumerMappingCreate, DatasetBindingCreate
from gateway.exchange.schemas import ExchangeRequest, ExchangeResponse
from gateway.jose import public_jwk
from gateway.policy.engine import DENY_CODES, POLICY_ERROR

__all__ = ["router"]

router = APIRouter(tags=["exchange"])
Admin = Annotated[Principal, Depends(require_role("admin"))]


#: 401 on every route a request token opens (``gateway.auth.requests``, the registry's key checks).
TOKEN_CODES = (
    "missing_token",
    "malformed_token",
    "invalid_token",
    "missing_claim",
    "bad_algorithm",
    "wrong_token_type",
    "unknown_key",
    "wrong_department_key",
    "wrong_system_key",
    "key_revoked",
    "key_expired",
    "unknown_department",
    "department_inactive",
    "unknown_system",
    "token_expired",
    "token_not_yet_valid",
    "token_lifetime_too_long",
    "wrong_audience",
    "signature_invalid",
    "token_request_mismatch",
    "body_mismatch",
)
#: The reasons a 403 ``policy_denied`` lists: the policy's deny codes, read from the
#: engine so they cannot drift (``policy_error`` is a 503 of its own).
DENY_REASONS = tuple(sorted(DENY_CODES - {POLICY_ERROR}))

EXCHANGE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: problem("The body is not JSON", ["malformed_json"]),
    401: problem("The request token was refused", [*TOKEN_CODES, "token_replayed"]),
    403: problem(
        "Denied by policy; `reasons` lists every reason ("
        + ", ".join(DENY_REASONS)
        + ") and `policy_version` the policy that decided",
        ["policy_denied"],
    ),
    404: problem(
        "Nothing to answer from",
        ["subject_not_found", "dataset_not_bound", "unknown_target_schema"],
    ),
    413: problem("The body is too large", ["body_too_large"]),
    415: problem("The body is not application/json", ["unsupported_media_type"]),
    422: problem(
        "The request or its release cannot be processed",
        [
            "validation_failed",
            "invalid_key",
            "predicate_invalid",
            "predicate_not_allowed",
            "predicate_undecidable",
            "aggregate_not_allowed",
            "aggregate_too_large",
            "release_type_mismatch",
            "target_schema_mismatch",
            "target_mapping_failed",
            "mapping_invalid",
        ],
    ),
    500: problem(
        "The gateway cannot serve this exchange; nothing was released",
        [
            "connector_misconfigured",
            "release_invalid_obligation",
            "obligation_exceeds_agreement",
            "decision_exceeds_agreement",
            "release_misconfigured",
            "internal_error",
        ],
    ),
    502: problem(
        "The provider's system failed; nothing was released",
        [
            "connector_error",
            "connector_unavailable",
            "connector_auth_failed",
            "connector_tls_failed",
            "connector_circuit_open",
            "connector_bad_response",
            "response_too_large",
            "unsafe_content",
            "mapping_error",
        ],
    ),
    503: problem(
        "A dependency of the gateway is down; nothing was released",
        ["policy_error", "audit_unavailable", "audit_log_damaged", "store_unavailable"],
    ),
    504: problem("The provider's system did not answer in time", ["connector_timeout"]),
}

#: Answers of the other routes a request token opens (receipts, access logs).
TOKEN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: problem("The request token was refused", [*TOKEN_CODES, "token_replayed"]),
    500: problem("An internal error; nothing was released", ["internal_error"]),
    503: problem("The store cannot be read", ["store_unavailable"]),
}

ADMIN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: problem("Missing or invalid bearer token"),
    403: problem("Role required", ["role_required"]),
    404: problem("Unknown department", ["unknown_department"]),
    422: problem(
        "Invalid input",
        ["validation_failed", "mapping_invalid", "connector_config_invalid", "dataset_mismatch"],
    ),
}
REQUEST_TOKEN_SECURITY: dict[str, Any] = {"security": [{REQUEST_TOKEN: []}]}

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
    openapi_extra={"requestBody": _REQUEST_BODY, **REQUEST_TOKEN_SECURITY},
)
async def post_exchange(request: Request) -> JSONResponse:
    """Authenticate, decide, fetch, translate, release, audit; answer with a signed receipt.

    Every answer carries an ``exchange_id`` (body and ``X-Exchange-ID``): the
    flow's own, or a fresh one for what is refused before the flow runs (415),
    or fails outside its error tree before the token verified (500; after it,
    the flow audits the fault and answers it under its own id).
    """
    services = get_services(request)
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    exchange = services.exchange
    if content_type.split(";")[0].strip().lower() != "application/json":
        request.state.exchange_id = new_exchange_id()
        raise UnsupportedMediaType("exchange requests are application/json")
    try:
        answer = await exchange.run(
            token=_bearer(request), method="POST", path=request.url.path, body=body
        )
    except AccordError:
        raise  # carries the flow's exchange id
    except Exception:
        # The flow binds its id to the log context: the same id in the answer and the logs.
        logged = structlog.contextvars.get_contextvars().get("exchange_id")
        request.state.exchange_id = logged if isinstance(logged, str) else new_exchange_id()
        raise
    request.state.exchange_id = answer.exchange_id
    return JSONResponse(answer.body, headers={"X-Exchange-ID": answer.exchange_id})


async def _system(request: Request, body: bytes = b"") -> Caller:
    """The calling system, its request token verified and then spent.

    The caller is kept on ``request.state`` once the signature verified and before
    the jti is claimed, so a replayed token's refusal names the system it belongs to.
    """
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
        verified=lambda caller: setattr(request.state, "caller", caller),
    )


async def _refused(
    request: Request, exc: AccordError, *, event: str, subject_key: str | None = None, **facts: Any
) -> None:
    """Audit a refusal on the receipt or access-log route (4xx: faults are not refusals).

    If the log does not take the entry, the answer is still the refusal, marked as
    the exchange marks it (``audit: unavailable``): nothing was released either way.
    """
    if not 400 <= exc.status < 500:
        return
    exchange = get_services(request).exchange
    caller: Caller | None = getattr(request.state, "caller", None)
    subject = None
    if subject_key is not None and caller is not None and exc.status != 401:
        subject = exchange.subjects.pseudonym(subject_key)
    route = request.scope.get("route")
    recorded = await exchange.refusals.system(
        event=event,
        method=request.method,
        route=str(getattr(route, "path", request.url.path)),
        status=exc.status,
        code=exc.code,
        caller=caller,
        subject=subject,
        **facts,
    )
    if not recorded:
        exc.extra.setdefault("audit", "unavailable")


class ReceiptWithProof(BaseModel):
    exchange_id: str
    receipt: str
    seq: int
    #: RFC 9162 inclusion proof against the latest checkpoint covering the entry (or null)
    inclusion_proof: dict[str, Any] | None


@router.get(
    "/v1/exchanges/{exchange_id}/receipt",
    response_model=ReceiptWithProof,
    responses={**TOKEN_PROBLEMS, 404: problem("No such exchange of yours", ["unknown_exchange"])},
    openapi_extra=REQUEST_TOKEN_SECURITY,
    summary="The exchange's receipt, with an inclusion proof once a checkpoint covers it",
)
async def get_receipt(request: Request, exchange_id: str) -> ReceiptWithProof:
    """A refusal is audited (``receipt``, ``refused``; a refused token as
    ``auth_failure``); a receipt given is not: it tells its department nothing the
    exchange's answer did not."""
    services = get_services(request)
    try:
        caller = await _system(request)
        found = await asyncio.to_thread(
            services.exchange.receipt_for, exchange_id, caller.department
        )
    except AccordError as exc:
        await _refused(request, exc, event="receipt", exchange=exchange_id)
        raise
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
    #: the bound this page was read below (null: from the newest)
    before: int | None
    count: int
    #: pass as ``before`` for the next (older) page; null when none remain
    next: int | None


@router.get(
    "/v1/subjects/{subject_key}/accesses",
    response_model=Accesses,
    responses={
        **TOKEN_PROBLEMS,
        403: problem("Only a citizen-portal system may ask", ["citizen_portal_only"]),
        503: problem(
            "The store cannot be read, or the audit log did not take the read; nothing was shown",
            ["store_unavailable", "audit_unavailable"],
        ),
    },
    openapi_extra=REQUEST_TOKEN_SECURITY,
    summary="Who accessed this person's data, when, and why (newest first)",
)
async def subject_accesses(
    request: Request,
    subject_key: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=0, lt=1 << 63)] = None,
    offset: Annotated[int, Query(ge=0, le=100_000, deprecated=True)] = 0,
) -> Accesses:
    """Pages are walked by ``before``: the answer's ``next``, the ``seq`` of its
    last access. Each read is audited (``access_log``, ``read``) before it is
    answered, and each refusal (``access_log``, ``refused``; a refused token as
    ``auth_failure``), under the subject's pseudonym, never the key."""
    services = get_services(request)
    try:
        caller = await _system(request)
        if "citizen_portal" not in caller.capabilities:
            raise ForbiddenError(
                "only a registered citizen-portal system may read access logs",
                code="citizen_portal_only",
            )
        found = await asyncio.to_thread(
            services.exchange.accesses,
            subject_key,
            caller=caller,
            limit=limit,
            before=before,
            offset=offset,
        )
    except AccordError as exc:
        await _refused(request, exc, event="access_log", subject_key=subject_key)
        raise
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
