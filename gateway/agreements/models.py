"""Agreement tables: one row per agreement version, plus its lifecycle events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from gateway.dbtypes import JSONColumn, UTCDateTime, utcnow

__all__ = ["Agreement", "AgreementEvent", "AgreementPublic", "Transition"]

STATUSES = ("draft", "active", "suspended", "revoked", "expired", "superseded")


class Agreement(SQLModel, table=True):
    __tablename__ = "agreement"
    __table_args__ = (UniqueConstraint("agreement_id", "version"),)
    pk: int | None = Field(default=None, primary_key=True)
    agreement_id: str = Field(index=True, max_length=63)
    version: int
    provider: str = Field(foreign_key="department.id", index=True)
    consumer: str = Field(foreign_key="department.id", index=True)
    status: str = Field(max_length=16)
    terms: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    signed: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONColumn, nullable=True))
    terms_sha256: str = Field(max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class AgreementEvent(SQLModel, table=True):
    __tablename__ = "agreement_event"
    id: int | None = Field(default=None, primary_key=True)
    agreement_pk: int = Field(foreign_key="agreement.pk", index=True)
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    actor: str = Field(max_length=200)
    reason: str = Field(default="", max_length=1000)
    at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class AgreementPublic(SQLModel):
    agreement_id: str
    version: int
    provider: str
    consumer: str
    status: str = Field(
        description="As of the request: `draft`, `active`, `suspended`, `revoked`, "
        "`superseded`, `expired` (its `valid_until` has passed, whether or not the "
        "gateway has recorded the expiry yet) or `not_yet_valid` (active, before "
        "`valid_from`)"
    )
    terms: dict[str, Any]
    signed: dict[str, Any] | None
    terms_sha256: str
    created_at: datetime
    updated_at: datetime


class Transition(SQLModel):
    status: Literal["active", "suspended", "revoked"]
    reason: str = Field(min_length=1, max_length=1000)
