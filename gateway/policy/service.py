"""The security officers' policy workflow: propose, check, dry-run, approve, activate, roll back.

Invariant 4 (ARCHITECTURE.md): every policy change is proposed, tested,
approved by a second officer and audited before it decides anything. So a
version moves ``draft -> checked -> approved -> active -> retired`` (or
``rejected``) only through this service; each step locks the single
``policy_head`` row first (changes from several nodes are serialised) and
appends its ``policy_change`` audit entry in the same transaction, so a step
whose audit append fails does not happen. The active pointer lives in the
database, which is how an activation on one node reaches every node
(``gateway.policy.runtime`` polls ``active_version``). Reads: ``PolicyQueries``;
the locked, audited transaction each step runs in: ``AuditedPolicyStore``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from gateway.db import session_scope
from gateway.errors import ValidationFailed
from gateway.policy.audited import AuditedPolicyStore
from gateway.policy.bundle import PolicyBundle
from gateway.policy.checks import BundleReport, PolicyRejected, check_bundle
from gateway.policy.engine import Decision
from gateway.policy.errors import (
    ChecksUnavailable,
    FourEyesViolation,
    NothingToRollBack,
    PolicyStateConflict,
)
from gateway.policy.impact import impact_summary, run_impact
from gateway.policy.models import (
    ImpactReport,
    PolicyVersion,
    PolicyVersionPublic,
)
from gateway.policy.probes import recorded_probes
from gateway.policy.store import (
    bundle_of,
    decision_record,
    delete_decisions_before,
    lock_head,
    record_activation,
    require_status,
    resolve_version,
    rollback_target,
    store_bootstrap_version,
    switch_active,
    verify_base_active,
)

__all__ = ["PolicyService"]


class PolicyService(AuditedPolicyStore):
    """Policy versions, the active pointer, the decision log and their audit trail."""

    # -- bootstrap -----------------------------------------------------------

    def ensure_initial(self, bundle_dir: Path, *, actor: str = "system:bootstrap") -> str:
        """On an empty store, make the shipped bundle the first active version (audited).

        Idempotent and safe on several nodes at once: returns the active version.
        The shipped bundle is checked when the ``opa`` binary is configured; a
        bundle that fails is refused and nothing is stored (fail closed).
        """
        current = self.active_version()
        if current is not None:
            return current
        bundle = PolicyBundle.from_directory(bundle_dir)
        report = self._run_checks(bundle) if self.opa_bin is not None else None
        if report is not None:
            report.verify()
        now = self.clock()
        with self._tx() as s:
            head = lock_head(s)
            if head.version is not None:
                return head.version
            row = store_bootstrap_version(
                s,
                bundle,
                actor=actor,
                now=now,
                note=f"shipped bundle from {bundle_dir}, activated at first start",
                checks=report.to_json() if report is not None else None,
            )
            record_activation(
                s, head, row.version, action="bootstrap", actor=actor, now=now, previous_id=None
            )
            self._audit(
                s,
                "activated",
                actor,
                row.version,
                bootstrap=True,
                checks="passed" if report is not None else "not_run",
            )
        self._notify(bundle.version)
        return bundle.version

    # -- the workflow --------------------------------------------------------

    def propose(self, bundle: PolicyBundle, *, actor: str, note: str = "") -> PolicyVersionPublic:
        """Store ``bundle`` as a draft, then run the automatic checks.

        Raises ``PolicyRejected`` (the version stays stored as ``rejected`` with
        its check results) when a check fails.
        """
        if len(note) > 1000:
            raise ValidationFailed("a proposal note is at most 1000 characters")
        now = self.clock()
        with self._tx() as s:
            head = lock_head(s)
            existing = s.get(PolicyVersion, bundle.version)
            if existing is not None:
                raise PolicyStateConflict(
                    f"{bundle.version} was already proposed (it is {existing.status})",
                    code="policy_exists",
                    extra={"version": bundle.version, "status": existing.status},
                )
            s.add(
                PolicyVersion(
                    version=bundle.version,
                    files=bundle.sources(),
                    status="draft",
                    note=note,
                    base_version=head.version,
                    proposer=actor,
                    proposed_at=now,
                )
            )
            s.flush()
            self._audit(
                s,
                "proposed",
                actor,
                bundle.version,
                files=sorted(bundle.files),
                base_version=head.version,
                note=note or None,
            )
        if self.opa_bin is None:
            return self._public(bundle.version)
        return self.check(bundle.version, actor=actor)

    def check(self, version: str, *, actor: str) -> PolicyVersionPublic:
        """Run the automatic checks on a draft and store the results (checked or rejected)."""
        with Session(self.engine) as s:
            row = resolve_version(s, version)
        require_status(row, "draft", "policy_not_draft")
        report = self._run_checks(bundle_of(row))
        now = self.clock()
        with self._tx() as s:
            lock_head(s)
            row = resolve_version(s, row.version)
            require_status(row, "draft", "policy_not_draft")
            row.checks, row.checked_at = report.to_json(), now
            row.status = "checked" if report.ok else "rejected"
            if not report.ok:
                row.rejected_by, row.rejected_at = "system:checks", now
            s.add(row)
            s.flush()
            failed = [c for c in report.checks if c.outcome == "failed"]
            self._audit(
                s,
                "checked" if report.ok else "rejected",
                actor,
                row.version,
                checks_passed=report.named("passed"),
                checks_failed=report.named("failed"),
                checks_skipped=report.named("skipped"),
                failure=failed[0].detail if failed else None,
            )
        if not report.ok:
            try:
                report.verify()
            except PolicyRejected as exc:
                exc.extra["version"] = row.version
                raise
        return self._public(row.version)

    def impact(
        self, version: str, *, actor: str, days: int = 30, limit: int = 50_000
    ) -> ImpactReport:
        """Replay the last ``days`` of the decision log through ``version`` vs the active one."""
        if not 1 <= days <= 3650 or not 1 <= limit <= 1_000_000:
            raise ValidationFailed("days must be 1..3650 and limit 1..1000000")
        with Session(self.engine) as s:
            row = resolve_version(s, version)
            if row.status in ("draft", "rejected"):
                raise PolicyStateConflict(
                    f"{row.version} is {row.status}; only checked versions can be dry-run",
                    code="policy_not_checked",
                )
            proposed = bundle_of(row)
        baseline = self.active_bundle()
        since = self.clock() - timedelta(days=days)
        report = run_impact(self.engine, proposed, baseline, since=since, days=days, limit=limit)
        with self._tx() as s:
            lock_head(s)
            row = resolve_version(s, row.version)
            row.impact = impact_summary(report, actor)
            s.add(row)
            s.flush()
            self._audit(
                s,
                "impact_assessed",
                actor,
                row.version,
                baseline=report.baseline,
                days=days,
                replayed=report.replayed,
                changed=report.changed,
                allow_to_deny=report.allow_to_deny,
                deny_to_allow=report.deny_to_allow,
                truncated=report.truncated,
            )
        return report

    def approve(self, version: str, *, actor: str) -> PolicyVersionPublic:
        """Approve a checked (or rolled-back) version; never by its proposer (four eyes).

        Approving a rolled-back version again is what lets it be activated
        again; ``activate`` then needs an officer other than this approver.
        Either way the approval is of the change from its base version, which
        ``activate`` puts in force only while that base is active: a change
        whose base is no longer active is refused here too (409
        ``policy_base_stale``), so no officer reviews what can never be
        activated as reviewed.
        """
        now = self.clock()
        with self._tx() as s:
            head = lock_head(s)
            row = resolve_version(s, version)
            require_status(row, ("checked", "rolled_back"), "policy_not_checked")
            if actor == row.proposer:
                raise FourEyesViolation(
                    f"{actor} proposed {row.version}; a different officer must approve it",
                    extra={"version": row.version, "proposer": row.proposer},
                )
            verify_base_active(head, row)
            after_rollback = row.status == "rolled_back"
            row.status, row.approver, row.approved_at = "approved", actor, now
            s.add(row)
            s.flush()
            self._audit(
                s,
                "approved",
                actor,
                row.version,
                proposer=row.proposer,
                impact_changed=(row.impact or {}).get("changed"),
                after_rollback=after_rollback,
            )
        return self._public(row.version)

    def reject(self, version: str, *, actor: str, reason: str) -> PolicyVersionPublic:
        """Turn down any version that is not active; a rejected one can never be active."""
        if not 1 <= len(reason) <= 500:
            raise ValidationFailed("a rejection needs a reason of 1..500 characters")
        now = self.clock()
        with self._tx() as s:
            head = lock_head(s)
            row = resolve_version(s, version)
            if head.version == row.version:
                raise PolicyStateConflict(
                    f"{row.version} is active; activate another version or roll back first",
                    code="policy_not_rejectable",
                    extra={"version": row.version, "status": row.status},
                )
            require_status(
                row,
                ("draft", "checked", "approved", "retired", "rolled_back"),
                "policy_not_rejectable",
            )
            previous = row.status
            row.status, row.rejected_by, row.rejected_at = "rejected", actor, now
            s.add(row)
            s.flush()
            self._audit(s, "rejected", actor, row.version, reason=reason, previous_status=previous)
        return self._public(row.version)

    def activate(self, version: str, *, actor: str) -> PolicyVersionPublic:
        """Make an approved (or superseded) version the one every node decides with.

        An ``approved`` version is a change approved against its base version,
        so it is activated only while that base is active (409
        ``policy_base_stale`` otherwise: propose it again on the active one). A
        ``retired`` version was superseded, never withdrawn: it passed four eyes,
        was itself active, and returning to it whole is no more than a rollback,
        which one officer may do. A ``rolled_back`` version must be approved
        again first, and then activated by an officer other than that approver.
        """
        now = self.clock()
        with self._tx() as s:
            head = lock_head(s)
            row = resolve_version(s, version)
            if head.version == row.version:
                raise PolicyStateConflict(f"{row.version} is already active", code="policy_active")
            require_status(row, ("approved", "retired"), "policy_not_approved")
            reactivated = row.status == "retired"
            if not reactivated:
                verify_base_active(head, row)
            # Only a rolled-back version re-approved can be approved and have been active.
            if row.status == "approved" and row.activated_at is not None and actor == row.approver:
                raise FourEyesViolation(
                    f"{actor} approved {row.version} again after it was rolled back;"
                    " a different officer must activate it",
                    extra={"version": row.version, "approver": row.approver},
                )
            previous = head.version
            switch_active(s, head, row, now)
            record_activation(
                s,
                head,
                row.version,
                action="activate",
                actor=actor,
                now=now,
                previous_id=head.activation_id,
            )
            self._audit(
                s,
                "activated",
                actor,
                row.version,
                previous_version=previous,
                base_version=row.base_version,
                reactivated=reactivated,
            )
        self._notify(row.version)
        return self._public(row.version)

    def rollback(self, *, actor: str) -> PolicyVersionPublic:
        """Return to the version active before the current one (a stack pop).

        The version rolled back from becomes ``rolled_back``: it may be active
        again only after a fresh approval. Versions below it that are blocked
        (rejected, or themselves rolled back) are passed over.
        """
        now = self.clock()
        with self._tx() as s:
            head = lock_head(s)
            target, passed_over = rollback_target(s, head)
            if head.version is None or target is None:
                raise NothingToRollBack(
                    "there is no earlier active version to return to"
                    + (f" (passed over blocked {', '.join(passed_over)})" if passed_over else "")
                )
            row = resolve_version(s, target.version)
            withdrawn = resolve_version(s, head.version)
            switch_active(s, head, row, now)
            withdrawn.status = "rolled_back"
            s.add(withdrawn)
            record_activation(
                s,
                head,
                row.version,
                action="rollback",
                actor=actor,
                now=now,
                previous_id=target.previous_id,
            )
            self._audit(
                s,
                "rolled_back",
                actor,
                row.version,
                from_version=withdrawn.version,
                passed_over=passed_over,
            )
        self._notify(row.version)
        return self._public(row.version)

    # -- the decision log ----------------------------------------------------

    def record_decision(
        self, *, exchange_id: str, policy_input: Mapping[str, Any], decision: Decision
    ) -> None:
        """Keep a decision and its input (labels and codes only) for impact dry-runs."""
        record = decision_record(
            exchange_id=exchange_id, policy_input=policy_input, decision=decision, now=self.clock()
        )
        with session_scope(self.engine) as s:
            s.add(record)

    def prune_decisions(self, *, before: datetime) -> int:
        """Delete decision-log rows older than ``before`` (retention); returns how many."""
        with session_scope(self.engine) as s:
            return delete_decisions_before(s, before)

    # -- internals -----------------------------------------------------------

    def _run_checks(self, bundle: PolicyBundle) -> BundleReport:
        if self.opa_bin is None:
            raise ChecksUnavailable(
                "the automatic checks need the opa binary (ACCORD_OPA_BIN); nothing can be checked"
            )
        try:
            return check_bundle(bundle, self.opa_bin, recorded=recorded_probes(self.engine))
        except OSError as exc:  # the configured binary is missing or not executable
            raise ChecksUnavailable(f"cannot run {self.opa_bin}: {exc.strerror}") from exc
