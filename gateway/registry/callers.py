"""The rows a request token is checked against, and the check itself.

``RegistryService.caller_rows`` reads them in one session; the exchange caches
them per state generation (``gateway.statecache``) and ``verify_caller`` judges
them at the request's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.errors import NotFoundError, SignatureError
from gateway.jose import PublicKey
from gateway.registry.models import Department, DepartmentKey, System

__all__ = ["CallerRows", "verify_caller"]


@dataclass(frozen=True)
class CallerRows:
    """A key, its claimed department and the calling system, as stored (None: absent)."""

    kid: str
    department_id: str
    key: DepartmentKey | None
    department: Department | None
    system: System | None
    public: tuple[PublicKey, str] | None

    def whole(self) -> bool:
        """The key, its department and the system all exist and belong together (a
        key bound to a system is that system's): worth caching. A token can name any
        kid, department and system before its signature is checked, so a lookup that
        found less is read again next time, not kept."""
        return (
            self.key is not None
            and self.key.department_id == self.department_id
            and self.department is not None
            and self.system is not None
            and self.key.system_id in (None, self.system.system_id)
        )


def verify_caller(rows: CallerRows, now: datetime) -> tuple[PublicKey, str, System | None]:
    """Raise unless the key may verify for the department at ``now``; time is an argument.

    A revoked or expired key verifies nothing from then on.
    """
    kid, department, row = rows.kid, rows.department_id, rows.key
    if row is None or rows.public is None:
        raise SignatureError(f"unknown key {kid!r}", code="unknown_key")
    if row.department_id != department:
        raise SignatureError(
            f"key {kid} does not belong to {department!r}", code="wrong_department_key"
        )
    if row.revoked_at is not None and now >= row.revoked_at:
        raise SignatureError(f"key {kid} was revoked: {row.revoked_reason}", code="key_revoked")
    if not row.usable_at(now):
        raise SignatureError(f"key {kid} is not valid at {now.isoformat()}", code="key_expired")
    dept = rows.department
    if dept is None:
        raise NotFoundError(f"unknown department {department!r}", code="unknown_department")
    if dept.status != "active":
        raise SignatureError(
            f"department {department!r} is {dept.status}", code="department_inactive"
        )
    system = rows.system if rows.system is not None and rows.system.status == "active" else None
    return rows.public[0], rows.public[1], system
