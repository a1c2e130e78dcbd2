"""FastAPI dependencies: services from ``app.state`` and role checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

from gateway.auth.humans import Principal
from gateway.errors import AuthError
from gateway.services import Services

__all__ = ["get_services", "principal", "require_role"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("a bearer token is required", code="missing_token")
    return get_services(request).humans.verify(token.strip())


def require_role(*roles: str) -> Callable[[Request], Any]:
    """Dependency factory: the caller must hold one of ``roles``.

    Roles are separate duties: an admin is not implicitly an officer or auditor.
    """

    def _check(request: Request) -> Principal:
        who = principal(request)
        request.state.principal = who  # named in the audit entry if refused below
        who.verify_role(*roles)
        return who

    _check.__name__ = f"require_{'_or_'.join(roles)}"
    return _check
