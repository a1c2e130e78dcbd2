"""The exchange API's request and response documents (parsed at the boundary).

A request names the agreement, dataset and purpose, and one query: a record by
subject key, a verify-only predicate about a subject, or an aggregate. The
response carries the released data under ``result``; ``response_sha256`` in the
receipt and the audit entry is the SHA-256 of the RFC 8785 bytes of ``result``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

__all__ = [
    "AggregateQuery",
    "AggregateResult",
    "ExchangeRequest",
    "ExchangeResponse",
    "RecordQuery",
    "RecordResult",
    "VerifyQuery",
    "VerifyResult",
]

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
SubjectKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordQuery(_Strict):
    """One record about one data subject."""

    kind: Literal["record"] = "record"
    subject: SubjectKey


class VerifyQuery(_Strict):
    """A yes/no answer about one subject (``age_over(18)``); the value never leaves."""

    kind: Literal["verify"]
    subject: SubjectKey
    predicate: str = Field(min_length=3, max_length=500)


class AggregateQuery(_Strict):
    """Counts (and sums) grouped by allowed fields; cells below the agreement's k are withheld."""

    kind: Literal["aggregate"]
    group_by: list[Name] = Field(min_length=1, max_length=5)
    measures: list[Annotated[str, Field(pattern=r"^(count|sum\([a-z][a-z0-9_]*\))$")]] = Field(
        default_factory=lambda: ["count"], min_length=1, max_length=5
    )


Query = Annotated[RecordQuery | VerifyQuery | AggregateQuery, Field(discriminator="kind")]


class ExchangeRequest(_Strict):
    agreement: Slug
    agreement_version: StrictInt | None = Field(default=None, ge=1, le=2**31 - 1)
    dataset: Slug
    purpose: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,99}$")]
    query: Query
    #: canonical fields wanted; defaults to every field the agreement lets out
    fields: list[Name] | None = Field(default=None, min_length=1, max_length=200)
    #: name of the consumer's own schema mapping (canonical -> consumer record)
    target_schema: Slug | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "agreement": "welfare-person-lookup",
                    "dataset": "person",
                    "purpose": "benefit-eligibility",
                    "query": {"kind": "record", "subject": "19850312345"},
                    "fields": ["person_id", "given_name", "family_name"],
                },
                {
                    "agreement": "welfare-person-lookup",
                    "dataset": "person",
                    "purpose": "benefit-eligibility",
                    "query": {
                        "kind": "verify",
                        "subject": "19850312345",
                        "predicate": "age_over(18)",
                    },
                },
            ]
        },
    )


class RecordResult(BaseModel):
    kind: Literal["record"] = "record"
    records: list[dict[str, Any]]


class VerifyResult(BaseModel):
    kind: Literal["verify"] = "verify"
    predicate: str
    result: bool


class AggregateResult(BaseModel):
    kind: Literal["aggregate"] = "aggregate"
    group_by: list[str]
    measures: list[str]
    min_k: int
    cells: list[dict[str, Any]]
    suppressed: int


class AuditRef(BaseModel):
    seq: int
    leaf_hash: str


class ExchangeResponse(BaseModel):
    exchange_id: str
    agreement: str
    dataset: str
    purpose: str
    result: RecordResult | VerifyResult | AggregateResult
    #: field -> release operation applied
    released: dict[str, str]
    policy_version: str
    audit: AuditRef
    #: JWS compact signed by the gateway (keys at /.well-known/jwks.json)
    receipt: str
