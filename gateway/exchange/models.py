"""Tables the exchange flow shares across gateway nodes: replay cache, quota
counters, provider dataset bindings and consumer mappings.

Nothing here holds an exchanged field value: bindings hold connector configs
(secrets stay ``${ENV}`` placeholders, expanded from the gateway's environment
when the connector is built) and mapping specs. Receipts are not stored: each
is rebuilt from its audit entry and re-signed (Ed25519 is deterministic).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import field_validator
from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from gateway.dbtypes import JSONColumn, UTCDateTime, utcnow

__all__ = [
    "ConsumerMapping",
    "ConsumerMappingCreate",
    "DatasetBinding",
    "DatasetBindingCreate",
    "ReplayedJti",
    "UsageCounter",
]

_SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


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
    """How a provider serves a dataset: its connector, entity and mapping to canonical."""

    dataset_id: str = Field(max_length=63, regex=_SLUG)
    #: canonical model the mapping produces, e.g. ``person@1``
    model: str = Field(max_length=80)
    #: entity name in the connector config
    entity: str = Field(max_length=80)
    #: connector config (``kind: rest|sql|soap|csv``); secrets as ``${ENV}`` placeholders
    connector: dict[str, Any]
    #: mapping spec (schemas/mapping.schema.json), provider entity -> canonical model
    mapping: dict[str, Any]
    #: canonical field holding the subject key (the data subject's identifier)
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


class ConsumerMappingCreate(SQLModel):
    """A consumer's own schema: canonical model -> the consumer's record shape."""

    name: str = Field(max_length=63, regex=_SLUG)
    #: mapping spec whose source is the canonical model
    mapping: dict[str, Any]
    #: JSON Schema of the consumer's record (output is validated against it)
    json_schema: dict[str, Any]

    @field_validator("json_schema")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError("a consumer schema must describe an object")
        return value


class ConsumerMapping(SQLModel, table=True):
    __tablename__ = "consumer_mapping"
    consumer: str = Field(primary_key=True, foreign_key="department.id", max_length=63)
    name: str = Field(primary_key=True, max_length=63)
    mapping: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    json_schema: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
