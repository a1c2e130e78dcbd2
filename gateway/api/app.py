"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.api import routes_agreements, routes_exchange, routes_health, routes_registry
from gateway.api.nul_guard import EXCHANGE_PATH, RefuseNul
from gateway.api.openapi import install_openapi
from gateway.api.problems import install_problem_handlers, new_exchange_id, problem_response
from gateway.api.routes_audit import router as audit_router
from gateway.api.routes_policy import router as policy_router
from gateway.log import configure_logging
from gateway.policy.embedded import EmbeddedEngine
from gateway.services import Services, build_services
from gateway.settings import Settings

__all__ = ["create_app"]

DESCRIPTION = """\
Accord brokers data exchanges between government departments: every request is
checked against a signed sharing agreement and the data classification, every
exchange is recorded in a tamper-evident audit log, and every answer carries a
receipt signed by the gateway. Errors are RFC 9457 problem+json documents whose
`type` is `urn:accord:problem:<code>`.
"""


class BodyLimit:
    """Refuses bodies above the limit before the app sees any of them (413 body_too_large).

    The body is read whole first and then handed on as it came. Raising from the
    app's ``receive`` instead would reach the app's own error handler, which
    answers 500 before this could answer 413. A 413 on the exchange route
    carries a fresh ``exchange_id``, as every answer of that route does; the
    request never reached the exchange flow, so no audit entry bears it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        if scope["path"] == EXCHANGE_PATH and scope["method"] == "POST":
            request.state.exchange_id = new_exchange_id()
        response = problem_response(
            request,
            status=413,
            code="body_too_large",
            title="Request body too large",
            detail=f"request bodies are limited to {self.max_bytes} bytes",
        )
        await response(scope, receive, send)


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


async def _metrics_endpoint(request: Request) -> Response:
    svc: Services = request.app.state.services
    runtime = svc.policy_runtime
    if runtime is not None:
        engine = runtime.engine
        evaluator = (engine.mode or "none") if isinstance(engine, EmbeddedEngine) else "server"
        svc.metrics.show_policy_engine(engine.name, evaluator, runtime.version)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


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
    app.add_middleware(RefuseNul)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestContext)
    return app
