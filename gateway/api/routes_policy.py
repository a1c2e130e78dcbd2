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
from gateway.auth.humans import Principal
from gateway.policy.bundle import PolicyBundle
from gateway.policy.models import (
    ActivationPublic,
    ImpactReport,
    PolicyVersionDetail,
    PolicyVersionPublic,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/policies", tags=["policies"])
Officer = Annotated[Principal, Depends(require_role("officer"))]
Reader = Annotated[Principal, Depends(require_role("officer", "auditor"))]

PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token (problem+json)"},
    403: {"description": "Role required, or `four_eyes_required` (problem+json)"},
    404: {"description": "`policy_not_found` / `policy_ambiguous` (problem+json)"},
    409: {
        "description": (
            "Wrong state for this step: `policy_exists`, `policy_not_checked`, "
            "`policy_not_approved`, `policy_active`, `nothing_to_roll_back` (problem+json)"
        )
    },
    422: {
        "description": (
            "`policy_rejected`: an automatic check failed; `checks` names the failing "
            "file, line, test or built-in (problem+json)"
        )
    },
    503: {"description": "`policy_checks_unavailable`: no opa binary (problem+json)"},
}
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
    responses=PROBLEMS,
    summary="Propose a bundle; the automatic checks run at once",
)
def propose(request: Request, body: ProposalIn, who: Officer) -> Any:
    bundle = PolicyBundle.from_sources(body.files)
    return get_services(request).policy.propose(bundle, actor=who.actor, note=body.note)


@router.get("", response_model=list[PolicyVersionPublic], responses=PROBLEMS)
def list_versions(request: Request, who: Reader, status: str | None = None) -> Any:
    return get_services(request).policy.list(status=status)


@router.get(
    "/active",
    response_model=PolicyVersionDetail | None,
    responses=PROBLEMS,
    summary="The version every node decides with (null before the first start)",
)
def active(request: Request, who: Reader) -> Any:
    service = get_services(request).policy
    version = service.active_version()
    return service.get(version) if version is not None else None


@router.get(
    "/history",
    response_model=list[ActivationPublic],
    responses=PROBLEMS,
    summary="Activations and rollbacks, newest first",
)
def history(request: Request, who: Reader) -> Any:
    return get_services(request).policy.history()


@router.post(
    "/rollback",
    response_model=PolicyVersionPublic,
    responses=PROBLEMS,
    summary="Return to the version active before the current one",
)
async def rollback(request: Request, who: Officer) -> Any:
    services = get_services(request)
    view = await asyncio.to_thread(services.policy.rollback, actor=who.actor)
    await _reload_local(request)
    return view


@router.get("/{version}", response_model=PolicyVersionDetail, responses=PROBLEMS)
def get_version(request: Request, version: str, who: Reader) -> Any:
    return get_services(request).policy.get(version)


@router.post(
    "/{version}/check",
    response_model=PolicyVersionPublic,
    responses=PROBLEMS,
    summary="Run the automatic checks on a draft again",
)
def check(request: Request, version: str, who: Officer) -> Any:
    return get_services(request).policy.check(version, actor=who.actor)


@router.post(
    "/{version}/impact",
    response_model=ImpactReport,
    responses=PROBLEMS,
    summary="Dry-run: replay recorded decisions through this version vs the active one",
)
def impact(request: Request, version: str, who: Officer, body: ImpactIn | None = None) -> Any:
    params = body or ImpactIn()
    return get_services(request).policy.impact(
        version, actor=who.actor, days=params.days, limit=params.limit
    )


@router.post(
    "/{version}/approve",
    response_model=PolicyVersionPublic,
    responses=PROBLEMS,
    summary="Approve a checked version (not by its proposer)",
)
def approve(request: Request, version: str, who: Officer) -> Any:
    return get_services(request).policy.approve(version, actor=who.actor)


@router.post(
    "/{version}/reject",
    response_model=PolicyVersionPublic,
    responses=PROBLEMS,
    summary="Turn down a version that is not active",
)
def reject(request: Request, version: str, body: RejectIn, who: Officer) -> Any:
    return get_services(request).policy.reject(version, actor=who.actor, reason=body.reason)


@router.post(
    "/{version}/activate",
    response_model=PolicyVersionPublic,
    responses=PROBLEMS,
    summary="Make an approved version active on every node",
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
