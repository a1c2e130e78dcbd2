"""Subject pseudonyms for the audit log, and the citizen's access log built on them.

The audit log never holds a subject key. It holds ``HMAC-SHA-256(k, key)`` where
``k`` is derived by HKDF from the gateway's root secret for this one use, so the
log can answer "who accessed my data" for a citizen who presents their key,
while an auditor reading the log learns nothing about who the subjects are.
Reading someone's access log is itself recorded (``access_log``, ``read``) under
the same pseudonym, so an auditor can also answer "who read this person's access
log"; those entries are not listed back to the citizen.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from audit import AuditError, AuditLog
from gateway.agreements.service import AgreementService
from gateway.agreements.terms import AgreementTerms, parse_time
from gateway.errors import NotFoundError, ServiceUnavailableError
from gateway.jose import b64url_encode

__all__ = ["SubjectPseudonyms", "subject_accesses"]

_INFO = b"accord/audit-subject-pseudonym/v1"
log = structlog.get_logger(__name__)


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
    actor: str,
    before: int | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """Released exchanges about one subject, newest first; embargoed agreements hidden.

    A page is the ``limit`` newest accesses whose ``seq`` is below ``before`` (all
    when it is None), after skipping ``offset`` of them (deprecated: an offset
    counted from the newest entry shifts when accesses arrive between pages).
    ``next`` is the ``seq`` of the page's last access when older ones remain: the
    ``before`` of the next page. A bound in the log does not move, so a portal
    walking pages by ``next`` sees each access once, whatever is appended
    meanwhile; an access whose embargo ends during the walk shows on the page
    its ``seq`` falls in, if the walk has not passed it yet.

    Only exchanges that released data are listed (refusals released nothing about
    the person, and the log's other entries about them, such as earlier reads of
    this log, are not accesses to their data). An agreement whose terms carry
    ``embargo_until`` in the future is left out, and each answer that hid one
    appends an ``embargo`` entry naming it, so the hiding itself is audited.

    Every answer appends an ``access_log`` ``read`` entry naming the reader, the
    pseudonym, the page asked for and how many accesses it holds, in the same
    transaction as its ``embargo`` entries; if the log does not take them the
    answer is 503 ``audit_unavailable`` and nothing is shown.
    """
    pseudonym = pseudonyms.pseudonym(subject_key)
    items: list[dict[str, Any]] = []
    hidden: set[str] = set()
    terms_cache: dict[str, AgreementTerms | None] = {}
    skipped = 0
    more = False
    for seq, doc in _released(audit_log, pseudonym, before):
        ref = str(doc.get("agreement", ""))
        if ref not in terms_cache:
            terms_cache[ref] = _terms(agreements, ref)
        terms = terms_cache[ref]
        embargo = terms.doc.get("embargo_until") if terms is not None else None
        if embargo is not None and parse_time(str(embargo)) > now:
            if len(items) < limit:  # past a full page, nothing is hidden from this one
                hidden.add(ref)
            continue
        if skipped < offset:
            skipped += 1
            continue
        if len(items) == limit:
            more = True  # one more visible access: the page has a next
            break
        items.append(_access(seq, doc, ref, terms))
    asked: dict[str, Any] = {"limit": limit, "offset": offset}
    if before is not None:
        asked["before"] = before
    entries: list[dict[str, Any]] = [
        {
            "event": "embargo",
            "actor": actor,
            "agreement": ref,
            "subject": pseudonym,
            "outcome": "hidden",
        }
        for ref in sorted(hidden)
    ]
    entries.append(
        {
            "event": "access_log",
            "actor": actor,
            "subject": pseudonym,
            "outcome": "read",
            "status": 200,
            "detail": {**asked, "count": len(items)},
        }
    )
    try:
        audit_log.append_many(entries)
    except AuditError as exc:
        log.error("audit_append_failed", code=exc.code, detail=exc.detail)
        raise ServiceUnavailableError(
            "the audit log did not take the read; nothing was shown", code="audit_unavailable"
        ) from exc
    return {
        "accesses": items,
        "limit": limit,
        "offset": offset,
        "before": before,
        "count": len(items),
        "next": items[-1]["seq"] if more else None,
    }


def _released(
    audit_log: AuditLog, pseudonym: str, before: int | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The subject's released exchanges below ``before``, newest first, read in
    batches each bounded by the last ``seq`` seen, so entries appended meanwhile
    (another read of this log) never shift what is read next."""
    bound = before
    while True:
        batch = audit_log.entries_by_subject(pseudonym, limit=200, before=bound)
        if not batch:
            return
        bound = batch[-1].seq
        for entry in batch:
            doc = entry.doc()
            if doc.get("event") == "exchange" and doc.get("outcome") == "released":
                yield entry.seq, doc


def _access(
    seq: int, doc: dict[str, Any], ref: str, terms: AgreementTerms | None
) -> dict[str, Any]:
    return {
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
        "seq": seq,
    }


def _terms(agreements: AgreementService, ref: str) -> AgreementTerms | None:
    agreement_id, _, version = ref.partition("@")
    try:
        row = agreements.get(agreement_id, int(version) if version.isdigit() else None)
    except NotFoundError:
        return None
    return AgreementTerms(row.terms)
