"""FastAPI dependencies: services from ``app.state`` and role checks.

A route's role check runs twice over: ``StaffAuthFirst`` authenticates the
caller of a staff route before anything reads the request body, and the
route's own dependency (``require_role``) then finds that person already
verified. FastAPI reads and parses a route's body before it solves the route's
dependencies, so without the middleware anyone who reaches the port could make
the gateway parse a megabyte of JSON, on its one event loop, before being told
their token is no good.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.nul_guard import EXCHANGE_PATH
from gateway.auth.humans import Principal
from gateway.errors import AccordError, AuthError
from gateway.services import Services

__all__ = ["StaffAuthFirst", "get_services", "principal", "require_role", "staff_routes"]

#: Every check ``require_role`` made, and the roles it admits.
_ROLE_CHECKS: dict[Callable[..., Any], tuple[str, ...]] = {}


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def principal(request: Request) -> Principal:
    verified = getattr(request.state, "verified_principal", None)  # by StaffAuthFirst
    if isinstance(verified, Principal):
        return verified
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
    _ROLE_CHECKS[_check] = roles
    return _check


def _roles_of(route: APIRoute) -> tuple[str, ...] | None:
    pending = list(route.dependant.dependencies)
    while pending:
        dep = pending.pop()
        if dep.call in _ROLE_CHECKS:
            return _ROLE_CHECKS[dep.call]
        pending.extend(dep.dependencies)
    return None


def staff_routes(routes: Iterable[Any]) -> list[tuple[APIRoute, tuple[str, ...] | None]]:
    """The app's routes in matching order, each with the roles it needs (None: no
    person's token)."""
    return [(r, _roles_of(r)) for r in routes if isinstance(r, APIRoute)]


class StaffAuthFirst:
    """Authenticates the caller of a staff route before its body is read.

    The request is matched against the routes as the app will match it; if the
    route it lands on needs a role, the bearer token is verified and the role
    checked here, and a refusal goes through the app's own handler for
    ``AccordError`` (the same problem+json, ``WWW-Authenticate`` and
    ``auth_failure`` or ``admin`` refusal entry as the route's dependency would
    give). Nothing of the body has been read by then: the server discards what
    the client still sends. The exchange route checks its own token before it
    parses anything and is passed straight through.
    """

    def __init__(
        self, app: ASGIApp, routes: Sequence[tuple[APIRoute, tuple[str, ...] | None]]
    ) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == EXCHANGE_PATH:
            await self.app(scope, receive, send)
            return
        matched = self._match(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        route, roles = matched
        # A refusal's audit entry names the route template, never the raw path.
        scope["route"] = route
        request = Request(scope)
        try:
            # A verifier may fetch an issuer's keys: off the loop, as the route's
            # own (synchronous) dependency would run.
            who = await asyncio.to_thread(principal, request)
            request.state.principal = who  # named in the audit entry if refused below
            who.verify_role(*roles)
        except AccordError as exc:
            answer = request.app.exception_handlers[AccordError](request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
            await response(scope, receive, send)
            return
        request.state.verified_principal = who
        await self.app(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[APIRoute, tuple[str, ...]] | None:
        """The route the app will run for ``scope`` (its first full match) and its
        roles, or None if that needs no person's token or nothing matches."""
        if not scope["path"].startswith("/v1/"):
            return None
        for route, roles in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return None if roles is None else (route, roles)
        return None
