"""Admin API for sharing agreements: drafts, signed submissions, lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request
from pydantic import BaseModel

from gateway.agreements.models import AgreementPublic, Transition
from gateway.agreements.signing import verify_agreement_report
from gateway.api.deps import get_services, require_role
from gateway.api.routes_registry import PROBLEMS
from gateway.api.submission_refusals import mark_received
from gateway.auth.humans import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])
#: Agreement versions are small positive integers (32-bit in the store).
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]
Admin = Annotated[Principal, Depends(require_role("admin"))]
Reader = Annotated[Principal, Depends(require_role("admin", "officer", "auditor"))]


async def _raw_body(request: Request) -> bytes:
    """The request body exactly as received (FastAPI has read it already): what a
    refusal's ``request_sha256`` hashes."""
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]

SIGNED_EXAMPLE = {
    "payload": "eyJhY2NvcmRfYWdyZWVtZW50IjoiMSIsLi4ufQ",
    "signatures": [
        {
            "protected": "eyJhbGciOiJFZERTQSIsImtpZCI6Ii4uLiIsInBhcnR5IjoicHJvdmlkZXIifQ",
            "signature": "...",
        },
    ],
}


class DraftIn(BaseModel):
    terms: dict[str, Any]


class SignatureReport(BaseModel):
    agreement: str
    valid: bool
    signatures: list[dict[str, Any]]
    missing_parties: list[str]


class EventOut(BaseModel):
    from_status: str | None
    to_status: str
    actor: str
    reason: str
    at: str


@router.post(
    "",
    response_model=AgreementPublic,
    status_code=201,
    responses=PROBLEMS,
    summary="Submit a fully signed agreement (JWS General JSON); it becomes active",
)
def submit(
    request: Request,
    who: Admin,
    signed: Annotated[dict[str, Any], Body(examples=[SIGNED_EXAMPLE])],
    raw: RawBody,
) -> Any:
    """A version whose `valid_from` is still ahead is stored active but waits: the
    version in force keeps deciding until then (this one reads `not_yet_valid`).
    A version already past its `valid_until` is refused (422 `agreement_expired`),
    as is one naming a field its dataset's model lacks (422 `unknown_fields`, the
    fields in `unknown_fields`) or a model that is not registered (422
    `unknown_model`). Every refusal is audited (`agreement_change`, `refused`), a
    body refused before it is read too (`gateway.api.submission_refusals`)."""
    mark_received(request)
    service = get_services(request).agreements
    return service.public(service.submit(signed, actor=who.actor, body=raw))


@router.post(
    "/drafts",
    response_model=AgreementPublic,
    status_code=201,
    responses=PROBLEMS,
    summary="Store unsigned terms as a draft",
)
def create_draft(request: Request, body: DraftIn, who: Admin, raw: RawBody) -> Any:
    mark_received(request)
    service = get_services(request).agreements
    return service.public(service.create_draft(body.terms, actor=who.actor, body=raw))


@router.post(
    "/verify",
    response_model=SignatureReport,
    responses=PROBLEMS,
    summary="Check a signed agreement's signatures without storing it",
)
def verify(
    request: Request,
    who: Reader,
    signed: Annotated[dict[str, Any], Body(examples=[SIGNED_EXAMPLE])],
) -> SignatureReport:
    service = get_services(request).agreements
    terms, _jws, statuses = verify_agreement_report(signed, service.resolve_key, service.clock())
    ok_parties = {s.party for s in statuses if s.ok}
    missing = [p for p in terms.required_parties if p not in ok_parties]
    return SignatureReport(
        agreement=terms.ref,
        valid=not missing and all(s.ok for s in statuses),
        signatures=[s.to_json() for s in statuses],
        missing_parties=missing,
    )


@router.get("", response_model=list[AgreementPublic], responses=PROBLEMS)
def list_agreements(request: Request, who: Reader, department: str | None = None) -> Any:
    service = get_services(request).agreements
    now = service.clock()
    return [service.public(row, now) for row in service.list_all(department=department)]


@router.get(
    "/{agreement_id}",
    response_model=AgreementPublic,
    responses=PROBLEMS,
    summary="The newest non-draft version of an agreement, its status as of now",
)
def get_latest(request: Request, agreement_id: str, who: Reader) -> Any:
    service = get_services(request).agreements
    return service.public(service.get(agreement_id))


@router.get(
    "/{agreement_id}/versions/{version}", response_model=AgreementPublic, responses=PROBLEMS
)
def get_version(request: Request, agreement_id: str, version: Version, who: Reader) -> Any:
    service = get_services(request).agreements
    return service.public(service.get(agreement_id, version))


@router.get(
    "/{agreement_id}/versions/{version}/events",
    response_model=list[EventOut],
    responses=PROBLEMS,
    summary="Lifecycle history: who, when, why",
)
def events(request: Request, agreement_id: str, version: Version, who: Reader) -> list[EventOut]:
    rows = get_services(request).agreements.events(agreement_id, version)
    return [
        EventOut(
            from_status=e.from_status,
            to_status=e.to_status,
            actor=e.actor,
            reason=e.reason,
            at=e.at.isoformat(),
        )
        for e in rows
    ]


@router.post(
    "/{agreement_id}/versions/{version}/status",
    response_model=AgreementPublic,
    responses=PROBLEMS,
    summary="Suspend, reactivate or revoke an agreement version",
)
def transition(
    request: Request,
    agreement_id: str,
    version: Version,
    body: Transition,
    who: Admin,
    raw: RawBody,
) -> Any:
    """Every refusal is audited (`agreement_change`, `refused`) as a refused submission
    is, a body refused before it is read too (`gateway.api.submission_refusals`)."""
    mark_received(request)
    service = get_services(request).agreements
    changed = service.transition(
        agreement_id, version, body.status, actor=who.actor, reason=body.reason, body=raw
    )
    return service.public(changed)
