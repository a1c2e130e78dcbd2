"""Which version rows an agreement change may write, checked in the caller's transaction.

One row per agreement id and version. An id keeps its provider and consumer for
good, and a version is stored only if it is newer than every version stored
that is not a draft: a change to terms in force needs a new version with new
signatures. A signed version fills its own draft only if the draft holds the
very same terms.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from gateway.agreements.models import Agreement
from gateway.agreements.terms import AgreementTerms
from gateway.errors import ConflictError

__all__ = ["new_row", "older_active", "refuse_existing", "refuse_newer", "signed_row"]


def refuse_existing(s: Session, terms: AgreementTerms) -> None:
    """Raise if this version is stored already, or ``refuse_newer`` would."""
    found = s.exec(
        select(Agreement).where(
            Agreement.agreement_id == terms.id, Agreement.version == terms.version
        )
    ).first()
    if found is not None:
        raise ConflictError(f"{terms.ref} already exists", code="agreement_exists")
    refuse_newer(s, terms)


def refuse_newer(s: Session, terms: AgreementTerms) -> None:
    """Raise if the id's newest version names other parties, or is not a draft and
    not older than this one."""
    newest = s.exec(
        select(Agreement)
        .where(Agreement.agreement_id == terms.id)
        .order_by(col(Agreement.version).desc())
    ).first()
    if newest is not None and (newest.provider, newest.consumer) != (
        terms.provider,
        terms.consumer,
    ):
        raise ConflictError(
            "an agreement id cannot change its parties", code="agreement_parties_changed"
        )
    if newest is not None and newest.version >= terms.version and newest.status != "draft":
        raise ConflictError(
            f"version {terms.version} is not newer than {newest.version}", code="stale_version"
        )


def signed_row(
    s: Session, terms: AgreementTerms, signed: dict[str, Any], now: datetime
) -> Agreement:
    """The row a signed version goes into, locked: its draft, if that holds these very
    terms, else a new row (status ``draft`` until the caller activates it)."""
    existing = s.exec(
        select(Agreement)
        .where(Agreement.agreement_id == terms.id, Agreement.version == terms.version)
        .with_for_update()
    ).first()
    if existing is not None:
        if existing.status != "draft" or existing.terms_sha256 != terms_sha256(terms):
            raise ConflictError(
                f"{terms.ref} exists; a change needs a new version with new signatures",
                code="agreement_exists",
            )
        existing.signed = signed
        return existing
    refuse_newer(s, terms)
    row = new_row(terms, signed, "draft", now)
    s.add(row)
    s.flush()
    return row


def older_active(s: Session, terms: AgreementTerms) -> list[Agreement]:
    """The id's active versions older than this one: those it supersedes."""
    return list(
        s.exec(
            select(Agreement).where(
                Agreement.agreement_id == terms.id,
                Agreement.status == "active",
                Agreement.version < terms.version,
            )
        )
    )


def new_row(
    terms: AgreementTerms, signed: dict[str, Any] | None, status: str, now: datetime
) -> Agreement:
    """A row for ``terms``; the terms' hash it keeps is what a signed version must
    match to fill it (``signed_row``)."""
    return Agreement(
        agreement_id=terms.id,
        version=terms.version,
        provider=terms.provider,
        consumer=terms.consumer,
        status=status,
        terms=terms.doc,
        signed=signed,
        terms_sha256=terms_sha256(terms),
        created_at=now,
        updated_at=now,
    )


def terms_sha256(terms: AgreementTerms) -> str:
    """The SHA-256 of the terms' RFC 8785 canonical bytes, as the row stores it."""
    return hashlib.sha256(terms.canonical()).hexdigest()
