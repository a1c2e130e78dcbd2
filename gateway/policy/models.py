"""Policy store tables and the shapes the workflow API returns.

Tables (migration ``0003_policy``): every proposed bundle with its checks and
who did what (``PolicyVersion``), the append-only activation history that
rollback walks (``PolicyActivation``), the single-row pointer to the active
version that every change locks first (``PolicyHead``), and the decision log
that impact dry-runs replay (``PolicyDecisionRecord``). The ``*Public`` and
report classes are what the API and CLI show; bundle sources are only in
``PolicyVersionDetail``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from gateway.dbtypes import JSONColumn, UTCDateTime

__all__ = [
    "STATUSES",
    "ActivationPublic",
    "CheckOut",
    "ImpactGroup",
    "ImpactReport",
    "PolicyActivation",
    "PolicyDecisionRecord",
    "PolicyHead",
    "PolicyStatus",
    "PolicyVersion",
    "PolicyVersionDetail",
    "PolicyVersionPublic",
]

PolicyStatus = Literal[
    "draft", "checked", "approved", "active", "retired", "rolled_back", "rejected"
]
#: ``retired``: superseded by a later activation; ``rolled_back``: withdrawn by a
#: rollback, so it needs a fresh approval before it may be active again.
STATUSES: tuple[str, ...] = (
    "draft",
    "checked",
    "approved",
    "active",
    "retired",
    "rolled_back",
    "rejected",
)


class PolicyVersion(SQLModel, table=True):
    __tablename__ = "policy_version"
    version: str = Field(primary_key=True, max_length=71)
    files: dict[str, str] = Field(sa_column=Column(JSONColumn, nullable=False))
    status: str = Field(max_length=16, index=True)
    note: str = Field(default="", max_length=1000)
    base_version: str | None = Field(default=None, max_length=71)
    proposer: str = Field(max_length=200)
    proposed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    checks: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONColumn))
    checked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    impact: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONColumn))
    approver: str | None = Field(default=None, max_length=200)
    approved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    rejected_by: str | None = Field(default=None, max_length=200)
    rejected_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    activated_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    retired_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class PolicyActivation(SQLModel, table=True):
    """One row per activation, rollback or bootstrap; ``previous_id`` makes a stack."""

    __tablename__ = "policy_activation"
    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(foreign_key="policy_version.version", max_length=71)
    previous_id: int | None = Field(default=None, foreign_key="policy_activation.id")
    action: str = Field(max_length=16)
    actor: str = Field(max_length=200)
    at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class PolicyHead(SQLModel, table=True):
    __tablename__ = "policy_head"
    id: int = Field(primary_key=True)
    version: str | None = Field(default=None, max_length=71)
    activation_id: int | None = None
    serial: int = 0


class PolicyDecisionRecord(SQLModel, table=True):
    """A decision and the input that produced it (labels and codes, never field values)."""

    __tablename__ = "policy_decision"
    id: int | None = Field(default=None, primary_key=True)
    exchange_id: str = Field(max_length=200, index=True)
    agreement: str | None = Field(default=None, max_length=200)
    consumer: str | None = Field(default=None, max_length=200)
    dataset: str | None = Field(default=None, max_length=200)
    policy_version: str | None = Field(default=None, max_length=71)
    allow: bool
    codes: list[str] = Field(sa_column=Column(JSONColumn, nullable=False))
    decision: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    input: Any = Field(sa_column=Column(JSONColumn, nullable=False))
    decided_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))


class CheckOut(SQLModel):
    name: str = Field(
        description=(
            "builtins | opa_check | regorus | well_formed_decisions | rego_tests | regorus_vm"
        )
    )
    ok: bool = Field(description="true only if the check ran and passed")
    status: Literal["passed", "failed", "skipped"] = Field(
        description="skipped: the check did not run (a check it needs failed); never passed"
    )
    detail: str = Field(default="", description="what failed: file, line, test or rule")


class PolicyVersionPublic(SQLModel):
    """A policy version as officers and auditors see it in lists."""

    version: str = Field(description="sha256:<hex> over the bundle's sorted files")
    status: PolicyStatus
    active: bool
    note: str
    base_version: str | None = Field(description="the active version when it was proposed")
    files: list[str] = Field(description="paths of the bundle's .rego files")
    proposer: str
    proposed_at: datetime
    checks_ok: bool | None = Field(description="null until the automatic checks ran")
    checks_pending: str | None = Field(
        default=None,
        description="why a draft's automatic checks have not run (null once they ran)",
    )
    checks: list[CheckOut] = Field(default_factory=list)
    checked_at: datetime | None = None
    approver: str | None = None
    approved_at: datetime | None = None
    rejected_by: str | None = None
    rejected_at: datetime | None = None
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    impact: dict[str, Any] | None = Field(
        default=None, description="summary of the latest impact dry-run"
    )


class PolicyVersionDetail(PolicyVersionPublic):
    sources: dict[str, str] = Field(description="the bundle: path -> Rego source")


class ActivationPublic(SQLModel):
    id: int
    version: str
    action: Literal["bootstrap", "activate", "rollback"]
    actor: str
    at: datetime
    rollback_to: str | None = Field(
        description="the version a rollback from this activation returns to (null: none)"
    )


class ImpactGroup(SQLModel):
    """Decisions of one agreement that change the same way."""

    agreement: str = Field(description="agreement id@version, or '(none)'")
    change: Literal[
        "allow_to_deny", "deny_to_allow", "reasons_changed", "obligations_changed", "level_changed"
    ]
    reasons_added: list[str]
    reasons_removed: list[str]
    fields_changed: list[str] = Field(description="fields whose release operation changes")
    count: int
    exchanges: list[str] = Field(description="up to 10 example exchange ids")


class ImpactReport(SQLModel):
    version: str = Field(description="the proposed version replayed")
    baseline: str | None = Field(description="the active version it is compared with")
    days: int
    since: datetime
    replayed: int = Field(description="recorded decisions replayed")
    changed: int = Field(description="decisions the proposed version would make differently")
    allow_to_deny: int
    deny_to_allow: int
    errors: int = Field(description="replays that gave policy_error under the proposed version")
    truncated: bool = Field(
        description=(
            "true when the window held more decisions than the limit; then the most recent"
            " `limit` decisions were replayed and older ones were not"
        )
    )
    first_decided_at: datetime | None = Field(
        default=None, description="when the oldest replayed decision was made"
    )
    last_decided_at: datetime | None = Field(
        default=None, description="when the newest replayed decision was made"
    )
    groups: list[ImpactGroup]
