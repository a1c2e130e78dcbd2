"""Reading the policy store: the active version and bundle, every version, the activations.

The read side of ``PolicyService`` (``gateway.policy.service``), which adds the
workflow steps that change the store. Reads take no lock and append nothing to
the audit log; ``active_version`` stays one primary-key read because every
node's runtime polls it.
"""

from __future__ import annotations

import builtins

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.errors import ServiceUnavailableError, ValidationFailed
from gateway.policy.bundle import PolicyBundle
from gateway.policy.models import (
    STATUSES,
    ActivationPublic,
    PolicyActivation,
    PolicyHead,
    PolicyVersion,
    PolicyVersionDetail,
    PolicyVersionPublic,
)
from gateway.policy.store import bundle_of, read_head, resolve_version
from gateway.policy.views import detail_view, history_view, public_view

__all__ = ["PolicyQueries"]


class PolicyQueries:
    """Policy versions, the active pointer and the activation history, read-only."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def active_version(self) -> str | None:
        """The active version (one primary-key read; runtimes poll it)."""
        with Session(self.engine) as s:
            head = s.get(PolicyHead, 1)
            return head.version if head is not None else None

    def active_bundle(self) -> PolicyBundle | None:
        with Session(self.engine) as s:
            head = s.get(PolicyHead, 1)
            if head is None or head.version is None:
                return None
            row = s.get(PolicyVersion, head.version)
            if row is None:  # pragma: no cover - foreign key guarantees it
                raise ServiceUnavailableError("the active policy version is missing")
            return bundle_of(row)

    def bundle(self, version: str) -> PolicyBundle:
        with Session(self.engine) as s:
            return bundle_of(resolve_version(s, version))

    def list(self, *, status: str | None = None) -> builtins.list[PolicyVersionPublic]:
        """Every version, newest first; an unknown ``status`` is refused, not an empty list."""
        if status is not None and status not in STATUSES:
            raise ValidationFailed(
                f"unknown status {status[:40]!r}; one of {', '.join(STATUSES)}",
                extra={"field": "status"},
            )
        with Session(self.engine) as s:
            active = read_head(s).version
            stmt = select(PolicyVersion).order_by(col(PolicyVersion.proposed_at).desc())
            if status is not None:
                stmt = stmt.where(PolicyVersion.status == status)
            return [public_view(r, active) for r in s.exec(stmt)]

    def get(self, version: str) -> PolicyVersionDetail:
        with Session(self.engine) as s:
            return detail_view(resolve_version(s, version), read_head(s).version)

    def history(self) -> builtins.list[ActivationPublic]:
        """Activations, newest first (what rollback walks back through)."""
        with Session(self.engine) as s:
            return history_view(
                list(s.exec(select(PolicyActivation).order_by(col(PolicyActivation.id).desc())))
            )

    def _public(self, version: str) -> PolicyVersionPublic:
        with Session(self.engine) as s:
            return public_view(resolve_version(s, version), read_head(s).version)
