"""Which registered keys may still be bound to a system of their department.

Keys registered before binding existed are bound to no system, and a system with
capabilities (a citizen portal) accepts only a key bound to it. Binding the key
the portal already holds lets such a deployment upgrade without a new key pair.
A bound key is never moved: binding it elsewhere would let it sign for a system
it could not sign for before, which takes a key registered for that system.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from gateway.errors import ConflictError, NotFoundError
from gateway.registry.models import DepartmentKey

__all__ = ["bindable_key"]


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
