"""Impact dry-run: replay recorded decision inputs through two bundles and group the changes.

A decision is a pure function of its recorded input (``gateway.policy.input``),
so replaying the decision log through the proposed bundle and through the
active one shows exactly what activating the proposal would change, without
the noise of decisions that were recorded under older versions or during an
outage. Replays run on the embedded engine's interpreter (regorus) in an
evaluator process of their own (``gateway.policy.sandbox.run_job``), so a
version slow on some recorded input cannot stall the gateway; the
differential corpus keeps regorus equal to OPA.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.errors import PolicyError
from gateway.policy.bundle import PolicyBundle
from gateway.policy.engine import Decision, DenyReason, decision_from_value
from gateway.policy.models import ImpactGroup, ImpactReport, PolicyDecisionRecord
from gateway.policy.sandbox import JobFailed, run_job

__all__ = [
    "Outcome",
    "ReplayedRecord",
    "group_changes",
    "impact_summary",
    "outcome_of",
    "replay",
    "run_impact",
]

_EXAMPLES = 10
#: How long one version's dry-run over the recorded inputs may take.
REPLAY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Outcome:
    """What a decision means, without messages or the version that made it."""

    allow: bool
    codes: tuple[str, ...]
    obligations: str  # canonical JSON of the obligations
    level: str | None

    def obligation_map(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.obligations)
        return value


def outcome_of(decision: Decision | Mapping[str, Any]) -> Outcome:
    doc = decision.to_json() if isinstance(decision, Decision) else decision
    codes = tuple(sorted({str(r["code"]) for r in doc.get("deny", [])}))
    return Outcome(
        allow=bool(doc.get("allow")),
        codes=codes,
        obligations=json.dumps(doc.get("obligations") or {}, sort_keys=True),
        level=doc.get("level"),
    )


def replay(bundle: PolicyBundle, inputs: Iterable[Mapping[str, Any]]) -> list[Decision]:
    """Decide every input with ``bundle``; never raises per input.

    Runs in an evaluator process (``gateway.policy.sandbox.run_job``), stopped
    after ``REPLAY_TIMEOUT_S``: a version slow or memory-hungry on some
    recorded input costs that process, never the gateway. Raises
    ``PolicyError`` when the version does not load or the replay does not finish.
    """
    args = {
        "sources": [list(pair) for pair in bundle.policy_sources().items()],
        "inputs": list(inputs),
    }
    try:
        out = run_job("replay", args, timeout_s=REPLAY_TIMEOUT_S)
    except JobFailed as exc:
        raise PolicyError(f"{bundle.version}: {exc}", code="policy_invalid") from exc
    if "error" in out:
        raise PolicyError(f"{bundle.version} does not load: {out['error']}", code="policy_invalid")
    return [
        _error(each["error"], bundle.version)
        if "error" in each
        else decision_from_value(each["value"], policy_version=bundle.version, engine="replay")
        for each in out["decisions"]
    ]


def _error(detail: str, version: str) -> Decision:
    # Not Decision.error: a dry-run's errors are reported, not logged as incidents.
    return Decision(False, (DenyReason("policy_error", detail),), {}, None, version, "replay")


@dataclass(frozen=True)
class ReplayedRecord:
    exchange_id: str
    agreement: str | None
    before: Outcome
    after: Outcome


def _change_kind(before: Outcome, after: Outcome) -> str:
    if before.allow and not after.allow:
        return "allow_to_deny"
    if after.allow and not before.allow:
        return "deny_to_allow"
    if before.codes != after.codes:
        return "reasons_changed"
    if before.obligations != after.obligations:
        return "obligations_changed"
    return "level_changed"


def _fields_changed(before: Outcome, after: Outcome) -> list[str]:
    a, b = before.obligation_map(), after.obligation_map()
    return sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))


def group_changes(records: Sequence[ReplayedRecord]) -> list[ImpactGroup]:
    """Group changed decisions by agreement, kind of change and the reasons involved."""
    groups: dict[tuple[Any, ...], ImpactGroup] = {}
    for r in records:
        if r.before == r.after:
            continue
        kind = _change_kind(r.before, r.after)
        added = sorted(set(r.after.codes) - set(r.before.codes))
        removed = sorted(set(r.before.codes) - set(r.after.codes))
        fields = _fields_changed(r.before, r.after) if r.before.allow and r.after.allow else []
        agreement = r.agreement or "(none)"
        key = (agreement, kind, tuple(added), tuple(removed), tuple(fields))
        group = groups.get(key)
        if group is None:
            group = ImpactGroup(
                agreement=agreement,
                change=kind,  # type: ignore[arg-type]  # one of the literal kinds
                reasons_added=added,
                reasons_removed=removed,
                fields_changed=fields,
                count=0,
                exchanges=[],
            )
            groups[key] = group
        group.count += 1
        if len(group.exchanges) < _EXAMPLES:
            group.exchanges.append(r.exchange_id)
    return sorted(groups.values(), key=lambda g: (-g.count, g.agreement, g.change))


def run_impact(
    engine: Engine,
    proposed: PolicyBundle,
    baseline: PolicyBundle | None,
    *,
    since: datetime,
    days: int,
    limit: int,
) -> ImpactReport:
    """Replay the ``limit`` most recent logged decisions since ``since``; compare versions.

    The most recent, because they are the traffic the proposal would meet; they
    are replayed (and reported) oldest first. Without an active version (empty
    store) the recorded decisions are the baseline.
    """
    with Session(engine) as s:
        newest_first = list(
            s.exec(
                select(PolicyDecisionRecord)
                .where(col(PolicyDecisionRecord.decided_at) >= since)
                .order_by(col(PolicyDecisionRecord.id).desc())
                .limit(limit + 1)
            )
        )
    truncated = len(newest_first) > limit
    rows = newest_first[:limit][::-1]
    inputs = [r.input for r in rows]
    after = replay(proposed, inputs)
    if baseline is None:
        before = [outcome_of(r.decision) for r in rows]
    elif baseline.version == proposed.version:
        before = [outcome_of(d) for d in after]
    else:
        before = [outcome_of(d) for d in replay(baseline, inputs)]
    records = [
        ReplayedRecord(r.exchange_id, r.agreement, b, outcome_of(a))
        for r, b, a in zip(rows, before, after, strict=True)
    ]
    changed = [r for r in records if r.before != r.after]
    return ImpactReport(
        version=proposed.version,
        baseline=baseline.version if baseline is not None else None,
        days=days,
        since=since,
        replayed=len(records),
        changed=len(changed),
        allow_to_deny=sum(1 for r in changed if r.before.allow and not r.after.allow),
        deny_to_allow=sum(1 for r in changed if r.after.allow and not r.before.allow),
        errors=sum(1 for d in after if d.is_error),
        truncated=truncated,
        first_decided_at=rows[0].decided_at if rows else None,
        last_decided_at=rows[-1].decided_at if rows else None,
        groups=group_changes(changed),
    )


def impact_summary(report: ImpactReport, actor: str) -> dict[str, Any]:
    """What a version row keeps of its latest dry-run (counts, not the groups)."""
    summary = {k: v for k, v in report.model_dump(mode="json").items() if k != "groups"}
    return summary | {"assessed_by": actor, "groups": len(report.groups)}
