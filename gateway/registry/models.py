"""Registry tables and their API shapes (Base → Create → table → Public)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import field_validator
from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from gateway.dbtypes import JSONColumn, UTCDateTime, utcnow

__all__ = [
    "CAPABILITIES",
    "Department",
    "DepartmentCreate",
    "DepartmentKey",
    "DepartmentPublic",
    "DepartmentStatusChange",
    "KeyBind",
    "KeyCreate",
    "KeyPublic",
    "KeyRevoke",
    "System",
    "SystemCreate",
    "SystemPublic",
    "SystemUpdate",
]

SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"
#: Every capability the gateway checks (``citizen_portal``: reads citizens' access
#: logs, ``gateway/api/routes_exchange.py``). Anything else would be stored and
#: silently never match, so the registry refuses it (``unknown_capability``).
CAPABILITIES = frozenset({"citizen_portal"})
_SLUG_RE = re.compile(SLUG)


def _verify_slug(value: str) -> str:
    if not _SLUG_RE.fullmatch(value):
        raise ValueError("must be a slug: lowercase letters, digits and '-', at most 63")
    return value


class DepartmentBase(SQLModel):
    id: str = Field(primary_key=True, regex=SLUG, max_length=63)
    name: str = Field(min_length=1, max_length=200)
    clearance: str = Field(min_length=1, max_length=64)
    contact: str = Field(default="", max_length=320)


class DepartmentCreate(DepartmentBase):
    caveats: list[str] = []

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        return _verify_slug(v)

    @field_validator("caveats")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return sorted(set(v))


class Department(DepartmentBase, table=True):
    __tablename__ = "department"
    caveats: list[str] = Field(default_factory=list, sa_column=Column(JSONColumn, nullable=False))
    status: str = Field(default="active", max_length=16)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class DepartmentPublic(DepartmentBase):
    caveats: list[str]
    status: str
    created_at: datetime


class SystemBase(SQLModel):
    system_id: str = Field(regex=SLUG, max_length=63)
    name: str = Field(default="", max_length=200)
    #: Capabilities beyond requesting exchanges, e.g. "citizen_portal".
    capabilities: list[str] = Field(
        default_factory=list, sa_column=Column(JSONColumn, nullable=False)
    )


class SystemCreate(SQLModel):
    system_id: str = Field(regex=SLUG, max_length=63)
    name: str = Field(default="", max_length=200)
    capabilities: list[str] = []

    @field_validator("system_id")
    @classmethod
    def _slug(cls, v: str) -> str:
        return _verify_slug(v)


class System(SQLModel, table=True):
    __tablename__ = "department_system"
    __table_args__ = (UniqueConstraint("department_id", "system_id"),)
    id: int | None = Field(default=None, primary_key=True)
    department_id: str = Field(foreign_key="department.id", index=True)
    system_id: str = Field(max_length=63)
    name: str = Field(default="", max_length=200)
    capabilities: list[str] = Field(
        default_factory=list, sa_column=Column(JSONColumn, nullable=False)
    )
    status: str = Field(default="active", max_length=16)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class SystemUpdate(SQLModel):
    """A change to a registered system; a field left out stays as it is."""

    name: str | None = Field(default=None, max_length=200)
    capabilities: list[str] | None = None


class SystemPublic(SQLModel):
    department_id: str
    system_id: str
    name: str
    capabilities: list[str]
    status: str


class KeyCreate(SQLModel):
    jwk: dict[str, Any]
    #: Bind the key to one system of the department: it then signs only for that
    #: system (``sub``), and a system with capabilities accepts only keys bound to it.
    system: str | None = Field(default=None, max_length=63)
    not_before: datetime | None = None
    not_after: datetime | None = None


class KeyBind(SQLModel):
    """The system of its department an already registered key is to sign for, and only it."""

    model_config = {"json_schema_extra": {"examples": [{"system": "portal"}]}}

    system: str = Field(max_length=63)


class KeyRevoke(SQLModel):
    reason: str = Field(min_length=1, max_length=500)


class DepartmentStatusChange(SQLModel):
    """Why a department is suspended or reinstated (recorded in the audit log)."""

    reason: str = Field(min_length=1, max_length=500)


class DepartmentKey(SQLModel, table=True):
    __tablename__ = "department_key"
    kid: str = Field(primary_key=True, max_length=64)
    department_id: str = Field(foreign_key="department.id", index=True)
    #: The one system this key signs for, or None: any system without capabilities.
    system_id: str | None = Field(default=None, max_length=63)
    alg: str = Field(max_length=16)
    jwk: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    not_before: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    not_after: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    revoked_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

    def usable_at(self, when: datetime) -> bool:
        if when < self.not_before:
            return False
        if self.not_after is not None and when >= self.not_after:
            return False
        return not (self.revoked_at is not None and when >= self.revoked_at)


class KeyPublic(SQLModel):
    kid: str
    department_id: str
    system_id: str | None = None
    alg: str
    jwk: dict[str, Any]
    not_before: datetime
    not_after: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None
