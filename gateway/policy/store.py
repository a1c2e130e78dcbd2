"""Row-level helpers of the policy store, used inside ``PolicyService`` transactions.

Kept apart from the workflow so the service reads as the list of steps and
their rules; everything here takes an open ``Session`` and never commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from gateway.errors import ServiceUnavailableError
from gateway.policy.bundle import PolicyBundle
from gateway.policy.engine import Decision
from gateway.policy.errors import PolicyNotFound, PolicyStateConflict
from gateway.policy.models import PolicyActivation, PolicyDecisionRecord, PolicyHead, PolicyVersion

__all__ = [
    "bundle_of",
    "decision_record",
    "decision_row",
    "delete_decisions_before",
    "lock_head",
    "read_head",
    "record_activation",
    "require_status",
    "resolve_version",
    "rollback_target",
    "store_bootstrap_version",
    "switch_active",
    "verify_base_active",
]

_REF = re.compile(r"^(sha256:)?([0-9a-f]{8,64})$")


def read_head(s: Session) -> PolicyHead:
    head = s.get(PolicyHead, 1)
    if head is None:
        raise ServiceUnavailableError(
            "the policy store is not initialised; run `accord db upgrade`",
            code="policy_store_missing",
        )
    return head


def lock_head(s: Session) -> PolicyHead:
    """Serialise workflow changes: write the head row first.

    On PostgreSQL the UPDATE takes the row lock; on SQLite it takes the
    database write lock. Either way the rest of the step sees no concurrent change.
    """
    s.connection().execute(
        update(PolicyHead).where(col(PolicyHead.id) == 1).values(serial=PolicyHead.serial + 1)
    )
    head = s.get(PolicyHead, 1, populate_existing=True)
    return head if head is not None else read_head(s)


def resolve_version(s: Session, ref: str) -> PolicyVersion:
    """Find a version by ``sha256:<hex>``, bare hex, or a unique prefix of 8+ hex digits."""
    match = _REF.match(ref.strip().lower())
    if match is None:
        raise PolicyNotFound(f"{ref!r} is not a policy version (sha256:<hex> or a prefix)")
    digest = match.group(2)
    if len(digest) == 64:
        row = s.get(PolicyVersion, "sha256:" + digest)
        if row is None:
            raise PolicyNotFound(f"no policy version sha256:{digest}")
        return row
    rows = list(
        s.exec(
            select(PolicyVersion)
            .where(col(PolicyVersion.version).startswith("sha256:" + digest))
            .limit(2)
        )
    )
    if not rows:
        raise PolicyNotFound(f"no policy version starts with sha256:{digest}")
    if len(rows) > 1:
        raise PolicyNotFound(
            f"sha256:{digest} names more than one version; give more digits",
            code="policy_ambiguous",
        )
    return rows[0]


def require_status(row: PolicyVersion, states: str | tuple[str, ...], code: str) -> None:
    allowed = (states,) if isinstance(states, str) else states
    if row.status not in allowed:
        raise PolicyStateConflict(
            f"{row.version} is {row.status}; this step needs {' or '.join(allowed)}",
            code=code,
            extra={"version": row.version, "status": row.status},
        )


def verify_base_active(head: PolicyHead, row: PolicyVersion) -> None:
    """Refuse to approve or activate a change unless the version it was proposed on is active.

    The approval is given for the change from ``base_version``: the impact
    dry-run and the reviewer's diff compared the bundle with that base. Put in
    force on any other version, it would silently undo whatever was approved
    and activated since (versions are content hashes, so an equal base is the
    very policy the change was reviewed against). The officer proposes the
    change again on the active version; a rollback, an explicit step of its
    own, can also bring the base back.
    """
    if row.base_version == head.version:
        return
    raise PolicyStateConflict(
        f"{row.version} was proposed on {row.base_version or 'no active version'}, but"
        f" {head.version or 'no version'} is active now; an approval covers its change from"
        " that base only: propose it again on the active version",
        code="policy_base_stale",
        extra={
            "version": row.version,
            "base_version": row.base_version,
            "active_version": head.version,
        },
    )


def switch_active(s: Session, head: PolicyHead, row: PolicyVersion, now: datetime) -> None:
    """Retire the active version and mark ``row`` active (``record_activation`` moves the head)."""
    if head.version is not None:
        old = s.get(PolicyVersion, head.version)
        if old is not None:
            old.status, old.retired_at = "retired", now
            s.add(old)
    row.status, row.activated_at = "active", now
    s.add(row)
    s.flush()


def rollback_target(s: Session, head: PolicyHead) -> tuple[PolicyActivation | None, list[str]]:
    """The activation a rollback returns to, and the versions it passes over.

    Walks the stack below the current activation to the first version that is
    ``retired`` (superseded, never withdrawn): a version rejected after it was
    retired, or itself rolled back, is blocked, and is passed over.
    """
    current = s.get(PolicyActivation, head.activation_id) if head.activation_id else None
    passed_over: list[str] = []
    below = current.previous_id if current is not None else None
    while below is not None:
        activation = s.get(PolicyActivation, below)
        if activation is None:  # pragma: no cover - foreign key guarantees it
            break
        row = s.get(PolicyVersion, activation.version)
        if row is not None and row.status == "retired" and row.version != head.version:
            return activation, passed_over
        passed_over.append(activation.version)
        below = activation.previous_id
    return None, passed_over


def record_activation(
    s: Session,
    head: PolicyHead,
    version: str,
    *,
    action: str,
    actor: str,
    now: datetime,
    previous_id: int | None,
) -> None:
    """Append to the activation history and point the head at ``version``."""
    activation = PolicyActivation(
        version=version, previous_id=previous_id, action=action, actor=actor, at=now
    )
    s.add(activation)
    s.flush()
    head.version, head.activation_id = version, activation.id
    s.add(head)
    s.flush()


def store_bootstrap_version(
    s: Session,
    bundle: PolicyBundle,
    *,
    actor: str,
    now: datetime,
    note: str,
    checks: dict[str, Any] | None,
) -> PolicyVersion:
    """The shipped bundle as an active version (``ensure_initial`` moves the head)."""
    row = s.get(PolicyVersion, bundle.version)
    if row is None:
        row = PolicyVersion(
            version=bundle.version,
            files=bundle.sources(),
            status="draft",
            note=note,
            proposer=actor,
            proposed_at=now,
        )
    row.status, row.activated_at, row.approver, row.approved_at = "active", now, actor, now
    if checks is not None:
        row.checks, row.checked_at = checks, now
    s.add(row)
    s.flush()
    return row


def bundle_of(row: PolicyVersion) -> PolicyBundle:
    """The stored bundle, re-hashed: a row whose files changed is refused."""
    bundle = PolicyBundle.from_sources(row.files)
    if bundle.version != row.version:
        raise ServiceUnavailableError(
            f"stored policy {row.version} does not hash to its version", code="policy_corrupt"
        )
    return bundle


def decision_record(
    *,
    exchange_id: str,
    policy_input: Mapping[str, Any],
    decision: Decision,
    now: datetime,
) -> PolicyDecisionRecord:
    """A decision-log row as an ORM object, holding its own copy of the input."""
    row = decision_row(
        exchange_id=exchange_id, policy_input=policy_input, decision=decision, now=now
    )
    row["input"] = json.loads(json.dumps(policy_input, allow_nan=False))
    return PolicyDecisionRecord(**row)


def decision_row(
    *,
    exchange_id: str,
    policy_input: Mapping[str, Any],
    decision: Decision,
    now: datetime,
) -> dict[str, Any]:
    """The columns of a decision-log row; ``input`` is ``policy_input`` itself (not copied)."""
    doc: Mapping[str, Any] = policy_input if isinstance(policy_input, Mapping) else {}
    agreement = doc.get("agreement")
    ref = None
    if isinstance(agreement, Mapping) and agreement.get("id"):
        ref = f"{agreement.get('id')}@{agreement.get('version', '?')}"
    return {
        "exchange_id": exchange_id[:200],
        "agreement": ref[:200] if ref else None,
        "consumer": _text(doc.get("caller"), "department"),
        "dataset": _text(doc.get("request"), "dataset"),
        "policy_version": decision.policy_version,
        "allow": decision.allow,
        "codes": list(decision.codes),
        "decision": decision.to_json(),
        "input": policy_input,
        "decided_at": now,
    }


def delete_decisions_before(s: Session, before: datetime) -> int:
    result = s.connection().execute(
        delete(PolicyDecisionRecord).where(col(PolicyDecisionRecord.decided_at) < before)
    )
    return int(result.rowcount)


def _text(doc: Any, key: str) -> str | None:
    if isinstance(doc, Mapping) and isinstance(doc.get(key), str):
        return str(doc[key])[:200]
    return None
