"""Read-only auditor API over the audit log: checkpoints, entries, proofs, status.

Every route needs the auditor or admin role and only reads. Audit-package errors
are translated to the gateway's error tree here, so they leave as problem+json
with the audit package's own stable codes (``audit_not_found`` …).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse

from audit import AuditError, AuditUnavailable, NotFound, ProofError, SignatureInvalid
from audit.status import VerifyStatus
from gateway.api.deps import get_services, require_role
from gateway.auth.humans import Principal
from gateway.errors import (
    AccordError,
    NotFoundError,
    ServiceUnavailableError,
    SignatureError,
    ValidationFailed,
)
from gateway.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require_role("auditor", "admin"))]
MAX_RANGE = 1000
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token (problem+json)"},
    403: {"description": "Auditor or admin role required (problem+json)"},
    404: {"description": "No such entry, exchange, tree size or checkpoint (problem+json)"},
    422: {"description": "Invalid query (problem+json)"},
    503: {"description": "The audit store cannot be read (problem+json)"},
}
SeqParam = Annotated[int, Query(ge=0, lt=1 << 63)]


@contextmanager
def _mapped() -> Iterator[None]:
    """Audit errors as gateway errors, keeping the audit package's code."""
    try:
        yield
    except NotFound as exc:
        raise NotFoundError(exc.detail, code=exc.code) from exc
    except ProofError as exc:
        raise ValidationFailed(exc.detail, code=exc.code) from exc
    except SignatureInvalid as exc:
        raise SignatureError(exc.detail, code=exc.code) from exc
    except AuditUnavailable as exc:
        raise ServiceUnavailableError(exc.detail, code=exc.code) from exc
    except AuditError as exc:
        raise AccordError(exc.detail, code=exc.code) from exc


def _status(services: Services) -> VerifyStatus:
    status = services.extras.get("audit_status")
    if not isinstance(status, VerifyStatus):
        status = VerifyStatus(services.audit_log)
        services.extras["audit_status"] = status
    return status


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={**PROBLEMS, 200: {"content": {"text/plain": {}}}},
    summary="Latest signed checkpoint (C2SP signed note, with witness cosignatures)",
)
def latest_checkpoint(request: Request, who: Auditor) -> PlainTextResponse:
    with _mapped():
        note = get_services(request).audit_log.latest_checkpoint()
    if note is None:
        raise NotFoundError("the log has no checkpoint yet", code="audit_no_checkpoint")
    return PlainTextResponse(note, media_type="text/plain; charset=utf-8")


@router.get("/keys", responses=PROBLEMS, summary="Verifier keys of the log and its witnesses")
def keys(request: Request, who: Auditor) -> dict[str, Any]:
    log = get_services(request).audit_log
    key = log.log_key
    return {
        "log": key.vkey() if key else None,
        "witnesses": [w.vkey() for w in log.witnesses],
    }


@router.get("/entries", responses=PROBLEMS, summary="Entries with start <= seq < end")
def entries(
    request: Request,
    who: Auditor,
    start: SeqParam = 0,
    end: Annotated[int | None, Query(ge=0, lt=1 << 63)] = None,
) -> dict[str, Any]:
    stop = start + MAX_RANGE if end is None else end
    if stop < start:
        raise ValidationFailed("end must not be before start", code="audit_bad_range")
    if stop - start > MAX_RANGE:
        raise ValidationFailed(
            f"at most {MAX_RANGE} entries per request", code="audit_range_too_large"
        )
    with _mapped():
        log = get_services(request).audit_log
        size = log.head().size
        # Clamp to the log first: seqs near 2^63 would overflow the store's integers.
        got = log.entries(start, min(stop, size)) if start < size else []
    return {"start": start, "size": size, "entries": [e.to_json() for e in got]}


@router.get(
    "/exchanges/{exchange_id}/entries",
    responses=PROBLEMS,
    summary="Every entry about one exchange",
)
def exchange_entries(request: Request, exchange_id: str, who: Auditor) -> dict[str, Any]:
    with _mapped():
        got = get_services(request).audit_log.entries_by_exchange(exchange_id[:200])
    if not got:
        raise NotFoundError(
            f"no entries for exchange {exchange_id[:200]!r}", code="audit_not_found"
        )
    return {"exchange_id": exchange_id, "entries": [e.to_json() for e in got]}


@router.get(
    "/proofs/inclusion/{seq}",
    responses=PROBLEMS,
    summary=(
        "RFC 9162 inclusion proof of an entry (against the latest checkpoint covering it, "
        "else the current tree, with checkpoint null)"
    ),
)
def inclusion(
    request: Request,
    seq: Annotated[int, Path(ge=0, lt=1 << 63)],
    who: Auditor,
    tree_size: Annotated[int | None, Query(ge=1, lt=1 << 63)] = None,
) -> dict[str, Any]:
    with _mapped():
        proof = get_services(request).audit_log.inclusion_proof(seq, tree_size)
    return proof.to_json()


@router.get(
    "/proofs/consistency",
    responses=PROBLEMS,
    summary="RFC 9162 consistency proof between two tree sizes",
)
def consistency(request: Request, who: Auditor, old: SeqParam, new: SeqParam) -> dict[str, Any]:
    if new < old:  # as for a range of entries: the request itself is wrong
        raise ValidationFailed("new must not be below old", code="audit_bad_range")
    with _mapped():
        proof = get_services(request).audit_log.consistency_proof(old, new)
    return proof.to_json()


@router.get(
    "/status",
    responses=PROBLEMS,
    summary="Verification status: the last full verification, re-run when stale",
)
def status(
    request: Request,
    who: Auditor,
    refresh: Annotated[bool, Query(description="re-verify unless checked very recently")] = False,
) -> dict[str, Any]:
    with _mapped():
        return _status(get_services(request)).get(refresh=refresh).to_json()
