"""Admin API for the department registry; the directory itself is public."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from gateway.api.deps import get_services, require_role
from gateway.api.openapi import problem
from gateway.auth.humans import Principal
from gateway.registry.models import (
    DepartmentCreate,
    DepartmentPublic,
    DepartmentStatusChange,
    KeyBind,
    KeyCreate,
    KeyPublic,
    KeyRevoke,
    SystemCreate,
    SystemPublic,
    SystemUpdate,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["registry"])
Admin = Annotated[Principal, Depends(require_role("admin"))]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token (problem+json)"},
    403: {"description": "Role required (problem+json)"},
    404: {"description": "Unknown department, system or key (problem+json)"},
    409: {"description": "Already exists, or already in that state (problem+json)"},
    422: {"description": "Invalid input (problem+json)"},
}

BIND_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    404: problem(
        "Unknown department, key or system", ["unknown_department", "unknown_key", "unknown_system"]
    ),
    409: problem(
        "The key is another department's, revoked, expired, bound to another system,"
        " or signed agreements in force (register a new key for the system)",
        [
            "wrong_department_key",
            "key_revoked",
            "key_expired",
            "key_bound_to_other_system",
            "key_signed_agreements",
        ],
    ),
}


class DirectoryEntry(BaseModel):
    id: str
    name: str
    status: str


class JWKSet(BaseModel):
    keys: list[dict[str, Any]]


@router.get("/departments", response_model=list[DirectoryEntry], summary="Department directory")
def list_departments(request: Request) -> list[DirectoryEntry]:
    depts = get_services(request).registry.list_departments()
    return [DirectoryEntry(id=d.id, name=d.name, status=d.status) for d in depts]


@router.post(
    "/departments",
    response_model=DepartmentPublic,
    status_code=201,
    responses=PROBLEMS,
    summary="Register a department",
)
def register_department(request: Request, body: DepartmentCreate, who: Admin) -> Any:
    return get_services(request).registry.register_department(body, actor=who.actor)


@router.get("/departments/{dept_id}", response_model=DepartmentPublic, responses=PROBLEMS)
def get_department(request: Request, dept_id: str) -> Any:
    return get_services(request).registry.get_department(dept_id)


@router.post(
    "/departments/{dept_id}/suspend",
    response_model=DepartmentPublic,
    responses=PROBLEMS,
    summary="Suspend a department: none of its keys authenticates an exchange",
)
def suspend_department(
    request: Request, dept_id: str, body: DepartmentStatusChange, who: Admin
) -> Any:
    return get_services(request).registry.set_department_status(
        dept_id, "suspended", body.reason, actor=who.actor
    )


@router.post(
    "/departments/{dept_id}/reinstate",
    response_model=DepartmentPublic,
    responses=PROBLEMS,
    summary="Reinstate a suspended department",
)
def reinstate_department(
    request: Request, dept_id: str, body: DepartmentStatusChange, who: Admin
) -> Any:
    return get_services(request).registry.set_department_status(
        dept_id, "active", body.reason, actor=who.actor
    )


@router.post(
    "/departments/{dept_id}/systems",
    response_model=SystemPublic,
    status_code=201,
    responses=PROBLEMS,
    summary="Register a system of a department",
)
def add_system(request: Request, dept_id: str, body: SystemCreate, who: Admin) -> Any:
    return get_services(request).registry.add_system(dept_id, body, actor=who.actor)


@router.get("/departments/{dept_id}/systems", response_model=list[SystemPublic], responses=PROBLEMS)
def list_systems(request: Request, dept_id: str, who: Admin) -> Any:
    return get_services(request).registry.list_systems(dept_id)


@router.patch(
    "/departments/{dept_id}/systems/{system_id}",
    response_model=SystemPublic,
    responses=PROBLEMS,
    summary="Change a system's name or capabilities",
)
def update_system(
    request: Request, dept_id: str, system_id: str, body: SystemUpdate, who: Admin
) -> Any:
    return get_services(request).registry.update_system(dept_id, system_id, body, actor=who.actor)


@router.post(
    "/departments/{dept_id}/systems/{system_id}/disable",
    response_model=SystemPublic,
    responses=PROBLEMS,
    summary="Disable a system: its request tokens are refused (unknown_system)",
)
def disable_system(request: Request, dept_id: str, system_id: str, who: Admin) -> Any:
    return get_services(request).registry.set_system_status(
        dept_id, system_id, "disabled", actor=who.actor
    )


@router.post(
    "/departments/{dept_id}/systems/{system_id}/enable",
    response_model=SystemPublic,
    responses=PROBLEMS,
    summary="Enable a disabled system again",
)
def enable_system(request: Request, dept_id: str, system_id: str, who: Admin) -> Any:
    return get_services(request).registry.set_system_status(
        dept_id, system_id, "active", actor=who.actor
    )


@router.post(
    "/departments/{dept_id}/keys",
    response_model=KeyPublic,
    status_code=201,
    responses=PROBLEMS,
    summary="Add a public signing key (JWK) of a department",
)
def add_key(request: Request, dept_id: str, body: KeyCreate, who: Admin) -> Any:
    return get_services(request).registry.add_key(dept_id, body, actor=who.actor)


@router.get(
    "/departments/{dept_id}/keys",
    response_model=list[KeyPublic],
    responses=PROBLEMS,
    summary="All keys of a department, with validity and revocation",
)
def list_keys(request: Request, dept_id: str) -> Any:
    registry = get_services(request).registry
    registry.get_department(dept_id)
    return registry.list_keys(dept_id)


@router.post(
    "/departments/{dept_id}/keys/{kid}/bind",
    response_model=KeyPublic,
    responses=BIND_PROBLEMS,
    summary="Bind a registered key to one system of its department: it signs only for it",
    description=(
        "For keys registered before binding: a system with capabilities (a citizen portal)"
        " accepts only a key bound to it. Binding is one-way; binding again to the same"
        " system changes nothing. A key that signed agreements in force is refused (409"
        " `key_signed_agreements`, naming them in `agreements`): register a new key for"
        " the system instead."
    ),
)
def bind_key(request: Request, dept_id: str, kid: str, body: KeyBind, who: Admin) -> Any:
    return get_services(request).registry.bind_key(dept_id, kid, body.system, actor=who.actor)


@router.get(
    "/departments/{dept_id}/jwks.json",
    response_model=JWKSet,
    responses=PROBLEMS,
    summary="The department's currently usable public keys as a JWK Set",
)
def department_jwks(request: Request, dept_id: str) -> JWKSet:
    services = get_services(request)
    services.registry.get_department(dept_id)
    now = services.registry.clock()
    keys = [k.jwk for k in services.registry.list_keys(dept_id) if k.usable_at(now)]
    return JWKSet(keys=keys)


@router.post(
    "/keys/{kid}/revoke",
    response_model=KeyPublic,
    responses=PROBLEMS,
    summary="Revoke a key: it verifies nothing from now on",
)
def revoke_key(request: Request, kid: str, body: KeyRevoke, who: Admin) -> Any:
    return get_services(request).registry.revoke_key(kid, body.reason, actor=who.actor)
