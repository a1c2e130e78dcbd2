"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import gc
import hmac
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.api import routes_agreements, routes_exchange, routes_health, routes_registry
from gateway.api.deps import StaffAuthFirst, staff_routes
from gateway.api.nul_guard import EXCHANGE_PATH, RefuseNul
from gateway.api.openapi import install_openapi, problem
from gateway.api.problems import install_problem_handlers, new_exchange_id, problem_response
from gateway.api.routes_audit import router as audit_router
from gateway.api.routes_policy import router as policy_router
from gateway.api.submission_refusals import AuditUnreadSubmissions
from gateway.errors import AuthError
from gateway.log import configure_logging, get_logger
from gateway.policy.embedded import EmbeddedEngine
from gateway.services import Services, build_services
from gateway.settings import Settings

__all__ = ["create_app"]

log = get_logger(__name__)

DESCRIPTION = """\
Accord brokers data exchanges between government departments: every request is
checked against a signed sharing agreement and the data classification, every
exchange is recorded in a tamper-evident audit log, and every answer carries a
receipt signed by the gateway. Errors are RFC 9457 problem+json documents whose
`type` is `urn:accord:problem:<code>`.
"""


class BodyLimit:
    """Reads the body whole, within a size and a time limit, before the app sees any of it.

    A body above ``max_bytes`` gets 413 ``body_too_large``; a body not received
    whole within ``timeout_s`` of the request's start (a client trickling it a
    byte at a time to hold the connection) gets 408 ``body_timeout`` and the
    connection is closed. A client that disconnects before its body is complete
    has nobody left to answer: the request ends here, quietly, and the app never
    runs (the app would otherwise fail reading the body, and log a fault).

    The body is read whole first and then handed on as it came. Raising from the
    app's ``receive`` instead would reach the app's own error handler, which
    answers 500 before this could answer 413. A 413 or 408 on the exchange route
    carries a fresh ``exchange_id``, as every answer of that route does; the
    request never reached the exchange flow, so no audit entry bears it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        messages: list[Message] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                whole = await self._read(receive, messages)
        except TimeoutError:
            await self._too_slow(scope, receive, send)
            return
        if whole is None:
            await self._too_large(scope, receive, send)
            return
        if not whole:
            log.debug("client_disconnected_mid_body", path=scope["path"][:200])
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, messages: list[Message]) -> bool | None:
        """Collect the body's messages: True once whole, False if the client left
        first, None once above the limit."""
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return False  # http.disconnect
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return None
            if not message.get("more_body"):
                return True

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            self._request(scope),
            status=413,
            code="body_too_large",
            title="Request body too large",
            detail=f"request bodies are limited to {self.max_bytes} bytes",
        )
        await response(scope, receive, send)

    async def _too_slow(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The connection is closed after the answer: the rest of the body may never
        # come, and could not be told apart from a next request on it.
        response = problem_response(
            self._request(scope),
            status=408,
            code="body_timeout",
            title="Request body too slow",
            detail=f"the request body must arrive whole within {self.timeout_s:g} s",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    @staticmethod
    def _request(scope: Scope) -> Request:
        request = Request(scope)
        if scope["path"] == EXCHANGE_PATH and scope["method"] == "POST":
            request.state.exchange_id = new_exchange_id()
        return request


class RequestContext:
    """A request id on every log line and every answer (``X-Request-ID``).

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's
    ``BaseHTTPMiddleware`` runs each request through an extra task and stream,
    which costs more than everything else this does.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        ok = 0 < len(given) <= 64 and given.replace("-", "").isalnum() and given.isascii()
        rid = given if ok else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def _readiness(svc: Services) -> dict[str, Callable[[], Awaitable[None]]]:
    async def policy() -> None:
        runtime = svc.policy_runtime
        if runtime is None:
            raise RuntimeError("policy runtime not started")
        health = await runtime.health()
        if not health.ok:
            raise RuntimeError(health.detail)

    async def audit() -> None:
        svc.audit_log.verify_appending()
        await asyncio.to_thread(svc.audit_log.head)

    return {"policy_engine": policy, "audit_log": audit}


def _verify_scraper(request: Request, token: SecretStr) -> None:
    """With ``ACCORD_METRICS_TOKEN`` set, ``/metrics`` answers only its bearer: the
    counters name who exchanges with whom, how often, why they were refused and
    which provider is down."""
    expected = token.get_secret_value()
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthError("metrics need the scrape bearer token", code="missing_token")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise AuthError("not the metrics scrape token", code="invalid_token")


async def _metrics_endpoint(request: Request) -> Response:
    svc: Services = request.app.state.services
    _verify_scraper(request, svc.settings.metrics_token)
    runtime = svc.policy_runtime
    if runtime is not None:
        engine = runtime.engine
        evaluator = (engine.mode or "none") if isinstance(engine, EmbeddedEngine) else "server"
        svc.metrics.show_policy_engine(engine.name, evaluator, runtime.version)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _document_edges(app: FastAPI) -> None:
    """Add to the OpenAPI document what ``BodyLimit`` answers on every route with a body."""
    base = app.openapi
    timeout = problem("The body did not arrive whole in time", ["body_timeout"])

    def openapi() -> dict[str, Any]:
        schema = base()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                if isinstance(operation, dict) and "requestBody" in operation:
                    operation.setdefault("responses", {}).setdefault("408", timeout)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    cfg = settings or (services.settings if services else Settings())
    configure_logging(json_logs=cfg.json_logs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        svc = services or build_services(cfg)
        app.state.services = svc
        await svc.start()
        svc.extras.setdefault("readiness", {}).update(_readiness(svc))
        if not cfg.dev_mode and not cfg.metrics_token.get_secret_value():
            log.warning(
                "metrics_unauthenticated",
                detail="/metrics answers anyone who reaches the port: set "
                "ACCORD_METRICS_TOKEN or serve it only on an internal network",
            )
        # Everything built so far lives as long as the process: move it out of the
        # collector's sight, so full collections stay short (bench: 80-120 ms pauses
        # over ~180k startup objects turned into the exchange p99).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await svc.stop()
            if owned:
                svc.close()

    app = FastAPI(
        title="Accord",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_problem_handlers(app)

    # Routes match in order: the exchange route, which carries the traffic, first.
    routers = (
        routes_exchange.router,
        routes_health.router,
        routes_registry.router,
        routes_agreements.router,
        policy_router,
        audit_router,
    )
    for router in routers:
        app.include_router(router)
    app.add_route("/metrics", _metrics_endpoint, include_in_schema=False)
    install_openapi(app, routers, routes_exchange.exchange_schemas())
    _document_edges(app)
    # Outermost last: a request id first, then a staff route's token, then the body
    # (an agreement submission refused before its route runs is audited there).
    app.add_middleware(RefuseNul)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes, timeout_s=cfg.body_timeout_s)
    app.add_middleware(AuditUnreadSubmissions)
    routes = staff_routes(r for router in routers for r in router.routes)
    app.add_middleware(StaffAuthFirst, routes=routes)
    app.add_middleware(RequestContext)
    return app
