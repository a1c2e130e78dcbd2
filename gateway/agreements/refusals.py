"""The audit entry for a refused agreement submission or status change.

A refused submission changes nothing, but an auditor still needs to see it: a
forged or tampered signature, terms for a department that does not exist, a
replay of an old version, a body that is not even JSON. The entry is
``agreement_change`` with ``outcome`` ``refused``, the ``problem`` code and HTTP
``status``, who submitted it, and the SHA-256 and size of the request body
exactly as received (as on exchange entries), never the body. It names the
agreement, provider and consumer only when the terms themselves parsed
(schema-valid identifiers); nothing else of an unverified document is copied
into the log.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gateway.agreements.terms import AgreementTerms
from gateway.auditing import AuditSink, audit_event
from gateway.errors import AccordError
from gateway.jose import b64url_decode
from gateway.log import get_logger

__all__ = ["audit_refusal", "refusal_entry", "unread_refusal_entry"]

log = get_logger(__name__)


def audit_refusal(
    audit: AuditSink | None,
    submitted: Any,
    exc: AccordError,
    *,
    actor: str,
    kind: str,
    body: bytes | None,
    **detail: str,
) -> None:
    """Append ``refusal_entry`` to ``audit``. The refusal is answered either way: if its
    entry cannot be appended, the log says so (``agreement_refusal_unaudited``)."""
    if audit is None:
        return
    try:
        audit.append(refusal_entry(submitted, exc, actor=actor, kind=kind, body=body, **detail))
    except Exception as failure:
        log.error("agreement_refusal_unaudited", code=exc.code, error=type(failure).__name__)


def refusal_entry(
    submitted: Any,
    exc: AccordError,
    *,
    actor: str,
    kind: str,
    body: bytes | None,
    **detail: str,
) -> dict[str, Any]:
    """The ``agreement_change`` entry for a submission of ``kind`` (``signed`` or
    ``draft``; ``transition``, with the stored terms as ``submitted``, for a status
    change) refused with ``exc``; ``body`` is the request body it came in (None:
    submitted in-process, with no request to hash)."""
    names: dict[str, Any] = {}
    terms = _terms(submitted, kind)
    if terms is not None:
        names.update(agreement=terms.ref, provider=terms.provider, consumer=terms.consumer)
    return unread_refusal_entry(
        actor=actor,
        kind=kind,
        status=exc.status,
        code=exc.code,
        body_sha256=hashlib.sha256(body).hexdigest() if body is not None else None,
        body_bytes=len(body) if body is not None else None,
        **names,
        **detail,
    )


def unread_refusal_entry(
    *,
    actor: str,
    kind: str,
    status: int,
    code: str,
    body_sha256: str | None,
    body_bytes: int | None,
    **names: str,
) -> dict[str, Any]:
    """The same entry for a submission refused before its terms were read (a body too
    large, not JSON, not the shape the route takes): what was received, counted and
    hashed, and nothing of it. ``body_sha256`` is None for a body refused before it
    arrived whole; ``body_bytes`` then counts what had arrived."""
    return audit_event(
        "agreement_change",
        actor=actor,
        outcome="refused",
        status=status,
        problem=code,
        submission=kind,
        request_sha256=body_sha256,
        body_bytes=body_bytes,
        **names,
    )


def _terms(submitted: Any, kind: str) -> AgreementTerms | None:
    """The submitted terms if they parse, else None (the entry then names no agreement)."""
    try:
        doc = submitted
        if kind == "signed":
            doc = json.loads(b64url_decode(submitted["payload"]))
        return AgreementTerms.from_json(doc)
    except (AccordError, KeyError, TypeError, ValueError):
        return None
