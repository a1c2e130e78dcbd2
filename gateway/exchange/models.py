"""Tables the exchange flow shares across gateway nodes: replay cache, quota
counters, provider datasets and issued receipts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from gateway.dbtypes import JSONColumn, UTCDateTime, utcnow

__all__ = [
    "DatasetBinding",
    "DatasetBindingCreate",
    "ExchangeRecord",
    "ReplayedJti",
    "UsageCounter",
]


class ReplayedJti(SQLModel, table=True):
    __tablename__ = "request_jti"
    iss: str = Field(primary_key=True, max_length=63)
    jti: str = Field(primary_key=True, max_length=128)
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))


class UsageCounter(SQLModel, table=True):
    __tablename__ = "usage_counter"
    agreement_id: str = Field(primary_key=True, max_length=63)
    window: str = Field(primary_key=True, max_length=32)
    count: int = 0


class DatasetBindingCreate(SQLModel):
    """How a provider serves a dataset: its connector and the mapping to canonical."""

    dataset_id: str = Field(max_length=63)
    model: str = Field(max_length=80)
    entity: str = Field(max_length=80)
    connector: dict[str, Any]
    mapping: dict[str, Any]
    #: canonical field holding the subject key (used for the subject access log)
    subject_field: str = Field(default="person_id", max_length=80)


class DatasetBinding(SQLModel, table=True):
    __tablename__ = "dataset_binding"
    provider: str = Field(primary_key=True, foreign_key="department.id", max_length=63)
    dataset_id: str = Field(primary_key=True, max_length=63)
    model: str = Field(max_length=80)
    entity: str = Field(max_length=80)
    connector: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    mapping: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    subject_field: str = Field(default="person_id", max_length=80)
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class ExchangeRecord(SQLModel, table=True):
    __tablename__ = "exchange_record"
    exchange_id: str = Field(primary_key=True, max_length=64)
    seq: int = Field(index=True)
    consumer: str = Field(max_length=63, index=True)
    agreement: str = Field(max_length=80)
    receipt: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
