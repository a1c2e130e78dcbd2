"""Liveness, readiness and health.

Readiness is 503 while any dependency is down. For the audit log that includes a
log known to be damaged and an appender whose last write (an append, or the
rolled-back write probe ``/readyz`` makes at most once a second) failed: a node
that cannot record an exchange cannot serve one (``gateway.auditing``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from gateway import __version__
from gateway.api.deps import get_services
from gateway.auditing import audit_readiness

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/livez", summary="Liveness: the process is serving")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health", summary="Health: liveness plus version and gateway id")
async def health(request: Request) -> dict[str, Any]:
    services = get_services(request)
    return {"status": "ok", "version": __version__, "gateway_id": services.settings.gateway_id}


class Readiness(BaseModel):
    """Each dependency's state: ``ok`` or ``error: <kind>``."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


@router.get(
    "/readyz",
    summary="Readiness: database, policy engine and audit appender",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "A dependency is down; `checks` names which",
        }
    },
)
async def readyz(request: Request) -> JSONResponse:
    services = get_services(request)
    checks: dict[str, str] = {}
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    for name, probe in services.extras.get("readiness", {}).items():
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
    audit = await audit_readiness(services.audit_log.engine)
    if audit != "ok" or "audit_log" not in checks:
        checks["audit_log"] = audit
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
