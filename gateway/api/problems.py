"""RFC 9457 problem+json: the one place errors become HTTP responses."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import AccordError
from gateway.log import get_logger

__all__ = [
    "MEDIA_TYPE",
    "PROBLEM_TYPE_PREFIX",
    "FieldError",
    "Problem",
    "ProblemReason",
    "install_problem_handlers",
    "is_store_outage",
    "new_exchange_id",
    "problem_response",
]

PROBLEM_TYPE_PREFIX = "urn:accord:problem:"
MEDIA_TYPE = "application/problem+json"
log = get_logger(__name__)


class FieldError(BaseModel):
    """One input field that failed validation (``validation_failed``, ``malformed_json``)."""

    field: str
    reason: str


class ProblemReason(BaseModel):
    """One reason of a policy refusal: a deny ``code`` and why."""

    code: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with Accord's stable ``code``.

    ``exchange_id`` is on every answer of ``POST /v1/exchanges`` and on no other
    route's; ``reasons`` and ``policy_version`` on a policy refusal (403
    ``policy_denied``, 503 ``policy_error``); ``errors`` on invalid input.
    """

    type: str
    title: str
    status: int
    detail: str
    code: str
    exchange_id: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
    reasons: list[ProblemReason] | None = None
    policy_version: str | None = None


def new_exchange_id() -> str:
    """An id for an exchange answer given before the exchange flow ran (413, 415, and
    422 for a NUL in the path or query).

    The same shape as the flow's own ids, so a caller cannot tell them apart by
    form; no audit entry bears one.
    """
    return uuid.uuid4().hex


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    exchange_id = getattr(request.state, "exchange_id", None)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": str(request.url.path),
    }
    if exchange_id:
        body["exchange_id"] = exchange_id
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    hdrs = dict(headers or {})
    if isinstance(body.get("exchange_id"), str):
        hdrs["X-Exchange-ID"] = body["exchange_id"]
    rid = getattr(request.state, "request_id", None)
    if rid:
        hdrs["X-Request-ID"] = rid
    if status == 401:
        hdrs.setdefault(
            "WWW-Authenticate", f'Bearer error="invalid_token", error_description="{code}"'
        )
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=hdrs)


#: Routes a department system's request token opens. Their refusals are audited
#: where they are known in full, not here: by the exchange flow
#: (``gateway.exchange.service``), and by the receipt and access-log handlers
#: (``routes_exchange._refused``), which name the subject's pseudonym, never the path.
_SYSTEM_ROUTES = ("/v1/exchanges", "/v1/subjects/")


def _staff_route(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(_SYSTEM_ROUTES)


def _route_template(request: Request) -> str:
    """The template of the route that refused ``request`` (``/v1/departments/{dept}``):
    what an audit entry names, never the raw path, which anyone may fill with text."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else "(unmatched)"


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("body_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


#: SQLSTATE classes of a server that is down, going down, out of resources or
#: refusing work for now (connection exception, insufficient resources, operator
#: intervention, system error, transaction rollback): retrying later can succeed.
_PG_OUTAGE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
#: lock_not_available, object_in_use: another session holds what this one needs.
_PG_OUTAGE_STATES = frozenset({"55P03", "55006"})
#: SQLite primary result codes of a file that cannot be used now: busy, locked,
#: out of memory, read-only, I/O error, corrupt, full, cannot open, lock
#: protocol, not a database. SQLITE_ERROR (a missing table, bad SQL) is a bug.
_SQLITE_OUTAGE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def is_store_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the gateway's database is unreachable or refusing work,
    rather than that the gateway asked it something wrong.

    An outage is a 503 (``store_unavailable``): the client may retry. Anything
    else the database raises (a constraint, bad SQL, a missing table) is a bug
    and stays a 500. Decided on the driver's own error (SQLSTATE, SQLite result
    code), never on the message.
    """
    if isinstance(exc, PoolTimeout | DisconnectionError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or (exc.orig is not None and is_store_outage(exc.orig))
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        # No SQLSTATE: the client side failed (connection refused or lost, pool timeout).
        return state is None or state[:2] in _PG_OUTAGE_CLASSES or state in _PG_OUTAGE_STATES
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _SQLITE_OUTAGE_CODES
    return False


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(AccordError)
    async def _accord(request: Request, exc: AccordError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request_failed", code=exc.code, detail=exc.detail)
        if exc.status in (401, 403) and _staff_route(request.url.path):
            who = getattr(request.state, "principal", None)
            await request.app.state.services.exchange.refusals.staff(
                method=request.method,
                route=_route_template(request),
                status=exc.status,
                code=exc.code,
                actor=who.actor if who is not None else None,
            )
        return problem_response(
            request,
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors()[:50]:
            loc = "/".join(str(p) for p in err.get("loc", ()))
            errors.append({"field": loc, "reason": str(err.get("msg", ""))})
        malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
        code = "malformed_json" if malformed else "validation_failed"
        first = errors[0] if errors else {"field": "", "reason": "invalid"}
        return problem_response(
            request,
            status=400 if malformed else 422,
            code=code,
            title="Malformed JSON" if malformed else "Invalid input",
            detail=f"{first['field']}: {first['reason']}",
            extra={"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        return problem_response(
            request,
            status=exc.status_code,
            code=code,
            title=title,
            detail=str(exc.detail),
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(DataError)
    async def _refused_value(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value (SQLSTATE class 22: too long, out of range,
        # not representable): input no check before it caught, not a fault.
        log.warning("value_refused_by_store", error_type=type(exc.orig).__name__)
        return problem_response(
            request,
            status=422,
            code="validation_failed",
            title="Invalid input",
            detail="a value in the request cannot be stored",
        )

    async def _store(request: Request, exc: Exception) -> JSONResponse:
        # The exchange flow maps its own store errors; every other route's meet here.
        if not is_store_outage(exc):
            raise exc  # a bug: on to ``_unexpected``, as any other
        log.warning("store_unavailable", error_type=type(exc).__name__)
        return problem_response(
            request,
            status=503,
            code="store_unavailable",
            title="Service unavailable",
            detail="the gateway's store is unavailable; nothing was changed or released",
        )

    for fault in (SQLAlchemyError, psycopg.Error, sqlite3.Error):
        app.add_exception_handler(fault, _store)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex
        log.error("unhandled_error", incident=incident, error_type=type(exc).__name__)
        return problem_response(
            request,
            status=500,
            code="internal_error",
            title="Internal error",
            detail=f"an internal error occurred (incident {incident}); nothing was released",
        )
