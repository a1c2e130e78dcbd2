"""Which registered keys may still be bound to a system of their department.

Keys registered before binding existed are bound to no system, and a system with
capabilities (a citizen portal) accepts only a key bound to it. Binding the key
the portal already holds lets such a deployment upgrade without a new key pair.
A bound key is never moved: binding it elsewhere would let it sign for a system
it could not sign for before, which takes a key registered for that system.
Nor is a key bound that signed an agreement still in force: a key bound to a
system signs no agreement (``gateway.agreements.signers``), so that agreement
would fail its next verification (a reactivation, say) while exchanges went on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from gateway.agreements.models import Agreement
from gateway.agreements.terms import AgreementTerms
from gateway.errors import AccordError, ConflictError, NotFoundError
from gateway.jose.jws import GeneralJWS
from gateway.registry.models import DepartmentKey

__all__ = ["bindable_key", "verify_signed_none_in_force"]

#: The states of an agreement version whose signatures are verified again: on every
#: exchange while active, when reactivated while suspended.
_IN_FORCE = ("active", "suspended")


def bindable_key(s: Session, dept_id: str, kid: str, system: str, now: datetime) -> DepartmentKey:
    """The key's row, locked, if it is a live key of ``dept_id`` that is unbound or
    already bound to ``system``; raise otherwise.

    A revoked or expired key is refused rather than quietly bound: it signs
    nothing, and binding it would look like a repair that changes nothing.
    """
    row = s.get(DepartmentKey, kid, with_for_update=True)
    if row is None:
        raise NotFoundError(f"unknown key {kid!r}", code="unknown_key")
    if row.department_id != dept_id:
        raise ConflictError(
            f"key {kid} belongs to {row.department_id!r}, not {dept_id!r}",
            code="wrong_department_key",
        )
    if row.revoked_at is not None:
        raise ConflictError(f"key {kid} is revoked: {row.revoked_reason}", code="key_revoked")
    if row.not_after is not None and now >= row.not_after:
        raise ConflictError(f"key {kid} expired at {row.not_after.isoformat()}", code="key_expired")
    if row.system_id is not None and row.system_id != system:
        raise ConflictError(
            f"key {kid} is bound to system {row.system_id!r}; a bound key is never moved,"
            f" register a new key for {system!r}",
            code="key_bound_to_other_system",
        )
    return row


def verify_signed_none_in_force(s: Session, dept_id: str, kid: str, now: datetime) -> None:
    """Raise 409 ``key_signed_agreements``, naming them, if ``kid`` signed for
    ``dept_id`` an agreement version active or suspended and not yet past its window.

    The department keeps that key for its agreements and registers a new key for the
    system instead (``add_key`` with ``system``).
    """
    rows = s.exec(
        select(Agreement)
        .where(col(Agreement.status).in_(_IN_FORCE))
        .where((Agreement.provider == dept_id) | (Agreement.consumer == dept_id))
        .order_by(col(Agreement.agreement_id), col(Agreement.version))
    )
    signed = [
        f"{row.agreement_id}@{row.version}"
        for row in rows
        if now < AgreementTerms(row.terms).valid_until and kid in _signers(row.signed)
    ]
    if signed:
        raise ConflictError(
            f"key {kid} signed agreements in force ({', '.join(signed)}); bound to a system"
            " it would sign no agreement and they would fail their next verification."
            " Register a new key for the system instead",
            code="key_signed_agreements",
            extra={"agreements": signed},
        )


def _signers(signed: dict[str, Any] | None) -> set[str]:
    """The key ids of a stored signed agreement's signatures (none for a draft)."""
    if signed is None:
        return set()
    try:
        return {entry.kid for entry in GeneralJWS.from_json(signed).signatures}
    except AccordError:  # stored only once verified; unreadable now, it names no key
        return set()
