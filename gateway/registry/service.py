"""Registry operations: departments, systems, keys, rotation and revocation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from gateway.auditing import AuditSink, audit_event
from gateway.classification import ClassificationScheme
from gateway.db import session_scope
from gateway.dbtypes import utcnow
from gateway.errors import ConflictError, NotFoundError, SignatureError, ValidationFailed
from gateway.jose import PublicKey, public_key_from_jwk
from gateway.jose.jwk import jwk_thumbprint
from gateway.registry.binding import bindable_key, verify_signed_none_in_force
from gateway.registry.callers import CallerRows, verify_caller
from gateway.registry.models import (
    CAPABILITIES,
    Department,
    DepartmentCreate,
    DepartmentKey,
    KeyCreate,
    System,
    SystemCreate,
    SystemUpdate,
)
from gateway.statecache import bump_generation

__all__ = ["CallerRows", "RegistryService", "verify_caller", "verify_capabilities"]

Clock = Callable[[], datetime]
#: A department is ``active`` or ``suspended``; a system ``active`` or ``disabled``.
DEPARTMENT_STATES = ("active", "suspended")
SYSTEM_STATES = ("active", "disabled")


def verify_capabilities(capabilities: list[str]) -> list[str]:
    """The capabilities, sorted and unique, if the gateway knows every one of them.

    A capability nobody checks (``citizen-portal`` for ``citizen_portal``) would be
    stored and never match: the system would be refused for a reason its
    registration never showed.
    """
    unknown = sorted(set(capabilities) - CAPABILITIES)
    if unknown:
        raise ValidationFailed(
            f"unknown capabilities {unknown}; known: {sorted(CAPABILITIES)}",
            code="unknown_capability",
        )
    return sorted(set(capabilities))


class RegistryService:
    def __init__(
        self,
        engine: Engine,
        scheme: ClassificationScheme,
        audit: AuditSink | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.scheme = scheme
        self.audit = audit
        self.clock = clock

    def _change_status(
        self, s: Session, row: Department | System, status: str, name: str, event: dict[str, Any]
    ) -> None:
        """Move ``row`` to ``status`` and audit ``event``. A move to the status it already
        has is refused (409 ``no_change``) rather than audited as a change that was not."""
        if row.status == status:
            raise ConflictError(f"{name} is already {status}", code="no_change")
        row.status = status
        s.add(row)
        self._record(s, event)

    def _record(self, session: Session, event: dict[str, Any]) -> None:
        """Flush first so constraint errors surface, then audit, then the caller commits."""
        try:
            session.flush()
        except IntegrityError as exc:
            raise ConflictError("conflicts with an existing record", code="already_exists") from exc
        bump_generation(session.connection())
        if self.audit is not None:
            fields = dict(event)
            kind = "key_change" if "kid" in fields else "department_change"
            self.audit.append_in(
                session.connection(),
                audit_event(
                    kind, actor=fields.pop("actor"), outcome=fields.pop("action"), **fields
                ),
            )

    # departments -----------------------------------------------------------------
    def register_department(self, data: DepartmentCreate, *, actor: str) -> Department:
        self.scheme.verify_level(data.clearance)
        unknown = set(data.caveats) - self.scheme.caveats
        if unknown:
            raise ValidationFailed(f"unknown caveats {sorted(unknown)}", code="unknown_caveat")
        with session_scope(self.engine) as s:
            if s.get(Department, data.id) is not None:
                raise ConflictError(f"department {data.id!r} exists", code="department_exists")
            dept = Department.model_validate(data)
            s.add(dept)
            self._record(
                s, {"action": "department_registered", "actor": actor, "department": data.id}
            )
            return dept

    def set_department_status(
        self, dept_id: str, status: str, reason: str, *, actor: str
    ) -> Department:
        """Suspend (``suspended``) or reinstate (``active``) a department.

        A suspended department's keys verify nothing for exchanges (401
        ``department_inactive``) and it cannot be a party to a new agreement;
        its keys stay as they are, so reinstating it needs no new keys.
        """
        if status not in DEPARTMENT_STATES:
            raise ValidationFailed(f"status must be one of {list(DEPARTMENT_STATES)}")
        with session_scope(self.engine) as s:
            dept = s.get(Department, dept_id, with_for_update=True)
            if dept is None:
                raise NotFoundError(f"unknown department {dept_id!r}", code="unknown_department")
            action = "department_suspended" if status == "suspended" else "department_reinstated"
            self._change_status(
                s,
                dept,
                status,
                f"department {dept_id!r}",
                {"action": action, "actor": actor, "department": dept_id, "reason": reason},
            )
            return dept

    def get_department(self, dept_id: str) -> Department:
        with Session(self.engine) as s:
            dept = s.get(Department, dept_id)
            if dept is None:
                raise NotFoundError(f"unknown department {dept_id!r}", code="unknown_department")
            return dept

    def list_departments(self) -> list[Department]:
        with Session(self.engine) as s:
            return list(s.exec(select(Department).order_by(Department.id)))

    # systems ---------------------------------------------------------------------
    def add_system(self, dept_id: str, data: SystemCreate, *, actor: str) -> System:
        capabilities = verify_capabilities(data.capabilities)
        self.get_department(dept_id)
        with session_scope(self.engine) as s:
            system = System(
                department_id=dept_id,
                system_id=data.system_id,
                name=data.name,
                capabilities=capabilities,
            )
            s.add(system)
            self._record(
                s,
                {
                    "action": "system_added",
                    "actor": actor,
                    "department": dept_id,
                    "system": data.system_id,
                },
            )
            return system

    def update_system(
        self, dept_id: str, system_id: str, data: SystemUpdate, *, actor: str
    ) -> System:
        """Change a system's name or capabilities (the fields ``data`` sets)."""
        capabilities = None if data.capabilities is None else verify_capabilities(data.capabilities)
        with session_scope(self.engine) as s:
            system = self._system_row(s, dept_id, system_id)
            change: dict[str, Any] = {}
            if data.name is not None and data.name != system.name:
                system.name = change["name"] = data.name
            if capabilities is not None and capabilities != sorted(system.capabilities):
                change["capabilities_before"] = sorted(system.capabilities)
                system.capabilities = change["capabilities"] = capabilities
            if not change:
                return system
            s.add(system)
            self._record(
                s,
                {
                    "action": "system_changed",
                    "actor": actor,
                    "department": dept_id,
                    "system": system_id,
                    **change,
                },
            )
            return system

    def set_system_status(self, dept_id: str, system_id: str, status: str, *, actor: str) -> System:
        """Disable (``disabled``) or enable (``active``) a system: a disabled system's
        tokens are refused as ``unknown_system``, whichever key signed them."""
        if status not in SYSTEM_STATES:
            raise ValidationFailed(f"status must be one of {list(SYSTEM_STATES)}")
        with session_scope(self.engine) as s:
            system = self._system_row(s, dept_id, system_id)
            action = "system_disabled" if status == "disabled" else "system_enabled"
            self._change_status(
                s,
                system,
                status,
                f"system {system_id!r} of {dept_id!r}",
                {"action": action, "actor": actor, "department": dept_id, "system": system_id},
            )
            return system

    @staticmethod
    def _system_row(s: Session, dept_id: str, system_id: str, *, lock: bool = True) -> System:
        """The system's row (locked for a change), whatever its status."""
        query = select(System).where(System.department_id == dept_id, System.system_id == system_id)
        found = s.exec(query.with_for_update() if lock else query).first()
        if found is None:
            raise NotFoundError(
                f"unknown system {system_id!r} of {dept_id!r}", code="unknown_system"
            )
        return found

    def get_system(self, dept_id: str, system_id: str) -> System:
        with Session(self.engine) as s:
            found = s.exec(
                select(System).where(System.department_id == dept_id, System.system_id == system_id)
            ).first()
            if found is None or found.status != "active":
                raise NotFoundError(
                    f"unknown system {system_id!r} of {dept_id!r}", code="unknown_system"
                )
            return found

    def list_systems(self, dept_id: str) -> list[System]:
        with Session(self.engine) as s:
            return list(s.exec(select(System).where(System.department_id == dept_id)))

    # keys ------------------------------------------------------------------------
    def add_key(self, dept_id: str, data: KeyCreate, *, actor: str) -> DepartmentKey:
        self.get_department(dept_id)
        if data.system is not None:
            with Session(self.engine) as s:
                self._system_row(s, dept_id, data.system, lock=False)
        _key, alg = public_key_from_jwk(data.jwk)
        kid = jwk_thumbprint(data.jwk)
        if "kid" in data.jwk and data.jwk["kid"] != kid:
            raise ValidationFailed(
                "the JWK's kid must be its RFC 7638 thumbprint", code="kid_not_thumbprint"
            )
        not_before = data.not_before or self.clock().replace(microsecond=0)
        if data.not_after is not None and data.not_after <= not_before:
            raise ValidationFailed("not_after must be later than not_before", code="bad_validity")
        public: dict[str, Any] = {k: data.jwk[k] for k in ("kty", "crv", "x", "y") if k in data.jwk}
        public.update({"alg": alg, "use": "sig", "kid": kid})
        with session_scope(self.engine) as s:
            if s.get(DepartmentKey, kid) is not None:
                raise ConflictError(f"key {kid} is already registered", code="key_exists")
            row = DepartmentKey(
                kid=kid,
                department_id=dept_id,
                system_id=data.system,
                alg=alg,
                jwk=public,
                not_before=not_before,
                not_after=data.not_after,
            )
            s.add(row)
            self._record(
                s,
                {
                    "action": "key_added",
                    "actor": actor,
                    "department": dept_id,
                    "kid": kid,
                    "system": data.system,
                },
            )
            return row

    def bind_key(self, dept_id: str, kid: str, system: str, *, actor: str) -> DepartmentKey:
        """Bind a live key of the department to one of its systems: it then signs for that
        system only, and a system with capabilities takes it (as if registered so). Bound
        again to the same system, nothing changes and nothing is recorded; a disabled
        system can be bound to, as ``add_key`` allows; a key that signed an agreement
        still in force is not (409 ``key_signed_agreements``, ``gateway.registry.binding``)."""
        self.get_department(dept_id)
        with session_scope(self.engine) as s:
            self._system_row(s, dept_id, system, lock=False)
            now = self.clock()
            row = bindable_key(s, dept_id, kid, system, now)
            if row.system_id != system:
                verify_signed_none_in_force(s, dept_id, kid, now)
                row.system_id = system
                s.add(row)
                event = {"action": "key_bound", "actor": actor, "department": dept_id}
                self._record(s, {**event, "kid": kid, "system": system})
            return row

    def revoke_key(
        self, kid: str, reason: str, *, actor: str, at: datetime | None = None
    ) -> DepartmentKey:
        when = at or self.clock()
        with session_scope(self.engine) as s:
            row = s.get(DepartmentKey, kid, with_for_update=True)
            if row is None:
                raise NotFoundError(f"unknown key {kid!r}", code="unknown_key")
            if row.revoked_at is not None:
                raise ConflictError(f"key {kid} is already revoked", code="key_revoked")
            row.revoked_at = when
            row.revoked_reason = reason
            s.add(row)
            self._record(
                s,
                {
                    "action": "key_revoked",
                    "actor": actor,
                    "department": row.department_id,
                    "kid": kid,
                    "reason": reason,
                },
            )
            return row

    def list_keys(self, dept_id: str) -> list[DepartmentKey]:
        with Session(self.engine) as s:
            return list(s.exec(select(DepartmentKey).where(DepartmentKey.department_id == dept_id)))

    def get_key(self, kid: str) -> DepartmentKey:
        with Session(self.engine) as s:
            row = s.get(DepartmentKey, kid)
            if row is None:
                raise SignatureError(f"unknown key {kid!r}", code="unknown_key")
            return row

    def verification_key(
        self, kid: str, *, department: str, now: datetime, signed_at: datetime | None = None
    ) -> tuple[PublicKey, str]:
        """The public key for ``kid`` if it belongs to ``department`` and may verify now.

        A revoked or expired key verifies nothing from then on; a key must also
        have been valid at ``signed_at`` when the signature says when it was made.
        """
        with Session(self.engine) as s:
            return self._verification_key(s, kid, department, now, signed_at)

    def caller(
        self, kid: str, *, department: str, system: str, now: datetime
    ) -> tuple[PublicKey, str, System | None]:
        """``verification_key`` and the calling system, in one read (the per-request path).

        The system is ``None`` when it is unknown or inactive; the caller decides
        when to say so (after the signature has been checked).
        """
        return verify_caller(self.caller_rows(kid, department, system), now)

    def caller_rows(self, kid: str, department: str, system: str) -> CallerRows:
        """The rows a request token is checked against, read in one session (cacheable)."""
        with Session(self.engine) as s:
            key = s.get(DepartmentKey, kid)
            dept = s.get(Department, department)
            found = s.exec(
                select(System).where(System.department_id == department, System.system_id == system)
            ).first()
        return CallerRows(
            kid=kid,
            department_id=department,
            key=key,
            department=dept,
            system=found,
            public=public_key_from_jwk(key.jwk) if key is not None else None,
        )

    def _verification_key(
        self, s: Session, kid: str, department: str, now: datetime, signed_at: datetime | None
    ) -> tuple[PublicKey, str]:
        row = s.get(DepartmentKey, kid)
        rows = CallerRows(
            kid=kid,
            department_id=department,
            key=row,
            department=s.get(Department, department),
            system=None,
            public=public_key_from_jwk(row.jwk) if row is not None else None,
        )
        key, alg, _ = verify_caller(rows, now)
        if signed_at is not None and row is not None and not row.usable_at(signed_at):
            raise SignatureError(
                f"key {kid} was not valid when the signature was made",
                code="key_not_valid_at_signing",
            )
        return key, alg
