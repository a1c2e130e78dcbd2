"""Subject pseudonyms for the audit log, and the citizen's access log built on them.

The audit log never holds a subject key. It holds ``HMAC-SHA-256(k, key)`` where
``k`` is derived by HKDF from the gateway's root secret for this one use, so the
log can answer "who accessed my data" for a citizen who presents their key,
while an auditor reading the log learns nothing about who the subjects are.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from audit import AuditLog
from gateway.agreements.service import AgreementService
from gateway.agreements.terms import AgreementTerms, parse_time
from gateway.errors import NotFoundError
from gateway.jose import b64url_encode

__all__ = ["SubjectPseudonyms", "subject_accesses"]

_INFO = b"accord/audit-subject-pseudonym/v1"


class SubjectPseudonyms:
    def __init__(self, root_secret: bytes) -> None:
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            root_secret
        )

    def pseudonym(self, subject_key: str) -> str:
        digest = hmac.new(self._key, subject_key.encode("utf-8"), hashlib.sha256).digest()
        return b64url_encode(digest)


def _purpose_basis(terms: AgreementTerms, purpose: str | None) -> str | None:
    for p in terms.doc.get("purposes", []):
        if p.get("code") == purpose:
            basis = p.get("legal_basis")
            return str(basis) if basis is not None else None
    return None


def subject_accesses(
    *,
    audit_log: AuditLog,
    agreements: AgreementService,
    pseudonyms: SubjectPseudonyms,
    subject_key: str,
    now: datetime,
    limit: int,
    offset: int,
    actor: str,
) -> dict[str, Any]:
    """Released exchanges about one subject, newest first; embargoed agreements hidden.

    Only exchanges that released data are listed (refusals released nothing about
    the person). An agreement whose terms carry ``embargo_until`` in the future
    is left out, and each answer that hid one appends an ``embargo`` entry
    naming it, so the hiding itself is audited.
    """
    pseudonym = pseudonyms.pseudonym(subject_key)
    items: list[dict[str, Any]] = []
    hidden: set[str] = set()
    terms_cache: dict[str, AgreementTerms | None] = {}
    scan_offset = 0
    skipped = 0
    while len(items) < limit:
        batch = audit_log.entries_by_subject(pseudonym, limit=200, offset=scan_offset)
        if not batch:
            break
        scan_offset += len(batch)
        for entry in batch:
            doc = entry.doc()
            if doc.get("event") != "exchange" or doc.get("outcome") != "released":
                continue
            ref = str(doc.get("agreement", ""))
            if ref not in terms_cache:
                terms_cache[ref] = _terms(agreements, ref)
            terms = terms_cache[ref]
            embargo = terms.doc.get("embargo_until") if terms is not None else None
            if embargo is not None and parse_time(str(embargo)) > now:
                hidden.add(ref)
                continue
            if skipped < offset:
                skipped += 1
                continue
            items.append(
                {
                    "when": doc["ts"],
                    "consumer": doc.get("consumer"),
                    "provider": doc.get("provider"),
                    "agreement": ref,
                    "dataset": doc.get("dataset"),
                    "fields": doc.get("fields", []),
                    "operations": doc.get("operations", {}),
                    "purpose": doc.get("purpose"),
                    "legal_basis": _purpose_basis(terms, doc.get("purpose")) if terms else None,
                    "exchange_id": doc.get("exchange_id"),
                    "seq": entry.seq,
                }
            )
            if len(items) >= limit:
                break
    for ref in sorted(hidden):
        audit_log.append(
            {
                "event": "embargo",
                "actor": actor,
                "agreement": ref,
                "subject": pseudonym,
                "outcome": "hidden",
            }
        )
    return {"accesses": items, "limit": limit, "offset": offset, "count": len(items)}


def _terms(agreements: AgreementService, ref: str) -> AgreementTerms | None:
    agreement_id, _, version = ref.partition("@")
    try:
        row = agreements.get(agreement_id, int(version) if version.isdigit() else None)
    except NotFoundError:
        return None
    return AgreementTerms(row.terms)
