"""Turn stored policy versions into what the API and CLI show."""

from __future__ import annotations

from typing import Any

from gateway.policy.models import (
    ActivationPublic,
    CheckOut,
    PolicyActivation,
    PolicyVersion,
    PolicyVersionDetail,
    PolicyVersionPublic,
)

__all__ = ["detail_view", "history_view", "public_view"]


def _fields(row: PolicyVersion, active: str | None) -> dict[str, Any]:
    checks = row.checks or {}
    return {
        "version": row.version,
        "status": row.status,
        "active": row.version == active,
        "note": row.note,
        "base_version": row.base_version,
        "files": sorted(row.files),
        "proposer": row.proposer,
        "proposed_at": row.proposed_at,
        "checks_ok": checks.get("ok") if row.checks is not None else None,
        "checks_pending": _pending(row),
        "checks": [_check(c) for c in checks.get("checks", [])],
        "checked_at": row.checked_at,
        "approver": row.approver,
        "approved_at": row.approved_at,
        "rejected_by": row.rejected_by,
        "rejected_at": row.rejected_at,
        "activated_at": row.activated_at,
        "retired_at": row.retired_at,
        "impact": row.impact,
    }


def _pending(row: PolicyVersion) -> str | None:
    """Why a draft has no check results: the gateway had no opa binary when it was
    proposed (with one, the checks run at once). It cannot be approved until they ran."""
    if row.status != "draft" or row.checks is not None:
        return None
    return (
        "the automatic checks have not run: they need the opa binary (ACCORD_OPA_BIN); "
        f"once it is set, run them with POST /v1/policies/{row.version}/check"
    )


def _check(stored: dict[str, Any]) -> CheckOut:
    """Results stored before checks had a status: ok was passed, anything else failed."""
    return CheckOut(**({"status": "passed" if stored.get("ok") else "failed"} | stored))


def public_view(row: PolicyVersion, active: str | None) -> PolicyVersionPublic:
    return PolicyVersionPublic(**_fields(row, active))


def detail_view(row: PolicyVersion, active: str | None) -> PolicyVersionDetail:
    return PolicyVersionDetail(**_fields(row, active), sources=dict(sorted(row.files.items())))


def history_view(rows: list[PolicyActivation]) -> list[ActivationPublic]:
    """Activation rows (newest first) with the version each one's rollback returns to."""
    by_id = {r.id: r for r in rows}
    out = []
    for r in rows:
        below = by_id.get(r.previous_id) if r.previous_id is not None else None
        assert r.id is not None
        out.append(
            ActivationPublic(
                id=r.id,
                version=r.version,
                action=r.action,  # type: ignore[arg-type]  # stored from the same literals
                actor=r.actor,
                at=r.at,
                rollback_to=below.version if below else None,
            )
        )
    return out
