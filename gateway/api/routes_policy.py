"""Security officers' policy API: propose, check, dry-run, approve, activate, roll back.

Officers change policies; auditors (and officers) read them. Each handler
parses, calls one ``PolicyService`` step and returns its view; the rules (four
eyes, states, checks, audit) live in the service. Versions are named
``sha256:<hex>``; a unique prefix of 8 or more hex digits also works.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from gateway.api.deps import get_services, require_role
from gateway.api.openapi import problem
from gateway.auth.humans import Principal
from gateway.policy.bundle import MAX_BUNDLE_BYTES, PolicyBundle
from gateway.policy.models import (
    ActivationPublic,
    ImpactReport,
    PolicyStatus,
    PolicyVersionDetail,
    PolicyVersionPublic,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/policies", tags=["policies"])
Officer = Annotated[Principal, Depends(require_role("officer"))]
Reader = Annotated[Principal, Depends(require_role("officer", "auditor"))]

Responses = dict[int | str, dict[str, Any]]

#: What ``require_role`` answers: the bearer token (401) or its roles (403).
STAFF_TOKEN_CODES = ("missing_token", "malformed_token", "bad_algorithm", "unknown_key")
READ: Responses = {
    401: problem("Missing or invalid bearer token", [*STAFF_TOKEN_CODES, "invalid_token"]),
    403: problem("The token lacks the role this route needs", ["role_required"]),
    503: problem("The policy store is not initialised", ["policy_store_missing"]),
}
NOT_FOUND: Responses = {
    404: problem(
        "No such version, or a prefix naming several", ["policy_not_found", "policy_ambiguous"]
    )
}
#: What a route with a JSON body answers before its handler runs: the gateway's body
#: limit (``ACCORD_MAX_BODY_BYTES``, ``BodyLimit``) and the JSON parser
#: (``gateway.api.problems``). A body that parses but does not fit is 422.
BODY: Responses = {
    400: problem("The body is not JSON", ["malformed_json"]),
    413: problem(
        "The body is above the gateway's request body limit (ACCORD_MAX_BODY_BYTES,"
        f" default 1 MiB); a bundle's files are at most {MAX_BUNDLE_BYTES} bytes,"
        " which leaves room for their JSON encoding",
        ["body_too_large"],
    ),
}
INVALID = ["validation_failed"]


def _responses(*parts: Responses, **by_status: dict[str, Any]) -> Responses:
    """Merge declarations; ``s409=problem(...)`` adds or replaces the answer of one status."""
    merged: Responses = {}
    for part in parts:
        merged.update(part)
    merged.update({int(k.removeprefix("s")): v for k, v in by_status.items()})
    return merged


CHECKS_503 = problem(
    "The automatic checks cannot run, or the store is not initialised or corrupt",
    ["policy_checks_unavailable", "policy_error", "policy_corrupt", "policy_store_missing"],
)
REJECTED_422 = problem(
    "An automatic check failed (`checks` names the failing check, file, line, test or"
    " built-in), or the bundle is invalid (a file path, no policy file, above"
    f" {MAX_BUNDLE_BYTES} bytes)",
    ["policy_rejected", *INVALID],
)
FOUR_EYES_403 = problem(
    "Role required, or the four-eyes rule refuses this officer",
    ["role_required", "four_eyes_required"],
)
EXAMPLE_BUNDLE: dict[str, Any] = {
    "files": {
        "exchange.rego": "package accord.exchange\n\n...",
        "exchange_test.rego": "package accord.exchange_test\n\n...",
    },
    "note": "Suspend eligibility checks under agreement agr-2",
}


class ProposalIn(BaseModel):
    """A policy bundle: every ``.rego`` file (tests included) by relative path."""

    model_config = {"json_schema_extra": {"examples": [EXAMPLE_BUNDLE]}}

    files: dict[str, str] = Field(min_length=1, max_length=500)
    note: str = Field(default="", max_length=1000, description="why this change")


class ImpactIn(BaseModel):
    days: int = Field(default=30, ge=1, le=3650, description="replay the last N days")
    limit: int = Field(default=50_000, ge=1, le=1_000_000, description="at most this many")


class RejectIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


@router.post(
    "",
    response_model=PolicyVersionPublic,
    status_code=201,
    responses=_responses(
        READ,
        BODY,
        s409=problem("The bundle was already proposed", ["policy_exists"]),
        s422=REJECTED_422,
        s503=CHECKS_503,
    ),
    summary="Propose a bundle; the automatic checks run at once",
)
def propose(request: Request, body: ProposalIn, who: Officer) -> Any:
    bundle = PolicyBundle.from_sources(body.files)
    return get_services(request).policy.propose(bundle, actor=who.actor, note=body.note)


@router.get(
    "",
    response_model=list[PolicyVersionPublic],
    responses=_responses(READ, s422=problem("Unknown status", ["validation_failed"])),
    summary="Every version, newest first; `status` filters by one status",
)
def list_versions(request: Request, who: Reader, status: PolicyStatus | None = None) -> Any:
    return get_services(request).policy.list(status=status)


@router.get(
    "/active",
    response_model=PolicyVersionDetail | None,
    responses=READ,
    summary="The version every node decides with (null before the first start)",
)
def active(request: Request, who: Reader) -> Any:
    service = get_services(request).policy
    version = service.active_version()
    return service.get(version) if version is not None else None


@router.get(
    "/history",
    response_model=list[ActivationPublic],
    responses=READ,
    summary="Activations and rollbacks, newest first",
)
def history(request: Request, who: Reader) -> Any:
    return get_services(request).policy.history()


@router.post(
    "/rollback",
    response_model=PolicyVersionPublic,
    responses=_responses(
        READ,
        s409=problem("No earlier version that may be active again", ["nothing_to_roll_back"]),
    ),
    summary="Return to the version active before the current one",
)
async def rollback(request: Request, who: Officer) -> Any:
    services = get_services(request)
    view = await asyncio.to_thread(services.policy.rollback, actor=who.actor)
    await _reload_local(request)
    return view


@router.get("/{version}", response_model=PolicyVersionDetail, responses=_responses(READ, NOT_FOUND))
def get_version(request: Request, version: str, who: Reader) -> Any:
    return get_services(request).policy.get(version)


@router.post(
    "/{version}/check",
    response_model=PolicyVersionPublic,
    responses=_responses(
        READ,
        NOT_FOUND,
        s409=problem("Only a draft can be checked", ["policy_not_draft"]),
        s422=REJECTED_422,
        s503=CHECKS_503,
    ),
    summary="Run the automatic checks on a draft again",
)
def check(request: Request, version: str, who: Officer) -> Any:
    return get_services(request).policy.check(version, actor=who.actor)


@router.post(
    "/{version}/impact",
    response_model=ImpactReport,
    responses=_responses(
        READ,
        NOT_FOUND,
        BODY,
        s409=problem("A draft or rejected version cannot be dry-run", ["policy_not_checked"]),
        s422=problem("Invalid days or limit", INVALID),
        s503=problem(
            "A version does not load, or the store is not initialised or corrupt",
            ["policy_invalid", "policy_corrupt", "policy_store_missing"],
        ),
    ),
    summary="Dry-run: replay the most recent recorded decisions through this version",
)
def impact(request: Request, version: str, who: Officer, body: ImpactIn | None = None) -> Any:
    params = body or ImpactIn()
    return get_services(request).policy.impact(
        version, actor=who.actor, days=params.days, limit=params.limit
    )


@router.post(
    "/{version}/approve",
    response_model=PolicyVersionPublic,
    responses=_responses(
        READ,
        NOT_FOUND,
        s403=FOUR_EYES_403,
        s409=problem(
            "Only a checked or rolled-back version, and only while the base version it was"
            " proposed on is active (`base_version`, `active_version`: propose it again on"
            " the active version)",
            ["policy_not_checked", "policy_base_stale"],
        ),
    ),
    summary="Approve a checked or rolled-back version (not by its proposer)",
)
def approve(request: Request, version: str, who: Officer) -> Any:
    return get_services(request).policy.approve(version, actor=who.actor)


@router.post(
    "/{version}/reject",
    response_model=PolicyVersionPublic,
    responses=_responses(
        READ,
        NOT_FOUND,
        BODY,
        s409=problem("The version is active or already rejected", ["policy_not_rejectable"]),
        s422=problem("A reason of 1..500 characters is needed", INVALID),
    ),
    summary="Turn down a version that is not active; it can never be active again",
)
def reject(request: Request, version: str, body: RejectIn, who: Officer) -> Any:
    return get_services(request).policy.reject(version, actor=who.actor, reason=body.reason)


@router.post(
    "/{version}/activate",
    response_model=PolicyVersionPublic,
    responses=_responses(
        READ,
        NOT_FOUND,
        s403=FOUR_EYES_403,
        s409=problem(
            "Already active; not approved (a rolled-back version needs a fresh approval); or"
            " approved as a change to a base version that is no longer active (`base_version`,"
            " `active_version`: propose it again on the active version)",
            ["policy_active", "policy_not_approved", "policy_base_stale"],
        ),
    ),
    summary="Make an approved (or superseded) version active on every node",
)
async def activate(request: Request, version: str, who: Officer) -> Any:
    services = get_services(request)
    view = await asyncio.to_thread(services.policy.activate, version, actor=who.actor)
    await _reload_local(request)
    return view


async def _reload_local(request: Request) -> None:
    """This node loads the new version now; the others within their poll interval."""
    runtime = getattr(get_services(request), "policy_runtime", None)
    if runtime is not None:
        await runtime.reload()
