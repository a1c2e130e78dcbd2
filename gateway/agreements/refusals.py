"""The audit entry for a refused agreement submission.

A refused submission changes nothing, but an auditor still needs to see it: a
forged or tampered signature, terms for a department that does not exist, a
replay of an old version. The entry is ``agreement_change`` with ``outcome``
``refused``, the ``problem`` code and HTTP ``status``, who submitted it, and
the SHA-256 of what was submitted. It names the agreement, provider and
consumer only when the terms themselves parsed (schema-valid identifiers);
nothing else of an unverified document is copied into the log.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gateway.agreements.terms import AgreementTerms
from gateway.auditing import audit_event
from gateway.errors import AccordError
from gateway.jose import b64url_decode

__all__ = ["refusal_entry"]


def refusal_entry(submitted: Any, exc: AccordError, *, actor: str, kind: str) -> dict[str, Any]:
    """The ``agreement_change`` entry for a submission of ``kind`` (``signed`` or
    ``draft``) refused with ``exc``."""
    facts: dict[str, Any] = {"submission": kind, "request_sha256": _sha256(submitted)}
    terms = _terms(submitted, kind)
    if terms is not None:
        facts.update(agreement=terms.ref, provider=terms.provider, consumer=terms.consumer)
    return audit_event(
        "agreement_change",
        actor=actor,
        outcome="refused",
        status=exc.status,
        problem=exc.code,
        **facts,
    )


def _sha256(submitted: Any) -> str | None:
    try:
        data = json.dumps(submitted, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def _terms(submitted: Any, kind: str) -> AgreementTerms | None:
    """The submitted terms if they parse, else None (the entry then names no agreement)."""
    try:
        doc = submitted
        if kind == "signed":
            doc = json.loads(b64url_decode(submitted["payload"]))
        return AgreementTerms.from_json(doc)
    except (AccordError, KeyError, TypeError, ValueError):
        return None
