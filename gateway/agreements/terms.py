"""Agreement terms: parsed at the boundary, checked against the JSON Schema and
against the invariants a schema cannot state (windows, parties, operations)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from connectors.mapping.standard_pattern import Validator
from gateway.errors import AgreementError, ValidationFailed
from gateway.jose.jws import canonical_bytes

__all__ = ["SCHEMA_DIR", "AgreementTerms", "parse_time", "schema_validator"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def schema_validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Validator(schema, format_checker=FormatChecker())


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a UTC offset")
    return value


def verify_against_schema(doc: Any, schema_name: str, code: str) -> None:
    """Raise with every violation, each naming the field path and the reason."""
    errors = sorted(schema_validator(schema_name).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        problems = [
            {"field": "/" + "/".join(str(p) for p in e.absolute_path), "reason": e.message}
            for e in errors[:50]
        ]
        first = problems[0]
        raise ValidationFailed(
            f"{first['field']}: {first['reason']}", code=code, extra={"errors": problems}
        )


@dataclass(frozen=True)
class AgreementTerms:
    doc: dict[str, Any]

    @classmethod
    def from_json(cls, doc: Any) -> AgreementTerms:
        verify_against_schema(doc, "agreement.schema.json", "agreement_schema_violation")
        terms = cls(doc)
        for name in ("valid_from", "valid_until", "embargo_until"):
            if doc.get(name) is not None:
                try:
                    parse_time(doc[name])
                except ValueError as exc:
                    raise ValidationFailed(
                        f"/{name}: not an RFC 3339 date-time with offset",
                        code="agreement_schema_violation",
                        extra={"errors": [{"field": f"/{name}", "reason": str(exc)}]},
                    ) from exc
        if terms.valid_until <= terms.valid_from:
            raise AgreementError("valid_until must be after valid_from", code="bad_validity_window")
        if terms.provider == terms.consumer:
            raise AgreementError("provider and consumer must differ", code="same_party")
        if "authority" in doc["required_parties"] and "authority" not in doc:
            raise AgreementError(
                "authority must be named when it is a required party", code="missing_authority"
            )
        codes = [p["code"] for p in doc["purposes"]]
        if len(codes) != len(set(codes)):
            raise AgreementError("purpose codes must be unique", code="duplicate_purpose")
        ids = [d["id"] for d in doc["datasets"]]
        if len(ids) != len(set(ids)):
            raise AgreementError("dataset ids must be unique", code="duplicate_dataset")
        for ds in doc["datasets"]:
            ops = {f["operation"] for f in ds["fields"].values()}
            if "aggregate" in ops and "aggregate" not in ds:
                raise AgreementError(
                    f"dataset {ds['id']!r} releases aggregates but sets no aggregate.min_k",
                    code="aggregate_without_k",
                )
        return terms

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def version(self) -> int:
        return int(self.doc["version"])

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def provider(self) -> str:
        return str(self.doc["provider"])

    @property
    def consumer(self) -> str:
        return str(self.doc["consumer"])

    @property
    def authority(self) -> str | None:
        value = self.doc.get("authority")
        return str(value) if value is not None else None

    @property
    def required_parties(self) -> tuple[str, ...]:
        return tuple(self.doc["required_parties"])

    @property
    def ceiling(self) -> str:
        return str(self.doc["classification_ceiling"])

    @property
    def caveats(self) -> frozenset[str]:
        return frozenset(self.doc.get("caveats", []))

    @property
    def valid_from(self) -> datetime:
        return parse_time(self.doc["valid_from"])

    @property
    def valid_until(self) -> datetime:
        return parse_time(self.doc["valid_until"])

    def in_window(self, now: datetime) -> bool:
        return self.valid_from <= now < self.valid_until

    def party_department(self, party: str) -> str | None:
        return {
            "provider": self.provider,
            "consumer": self.consumer,
            "authority": self.authority,
        }.get(party)

    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        for ds in self.doc["datasets"]:
            if ds["id"] == dataset_id:
                return dict(ds)
        return None

    def canonical(self) -> bytes:
        return canonical_bytes(self.doc)
