"""Build the one document the exchange policy decides on.

Everything a decision depends on goes into ``input`` (nothing into OPA's
``data``): the caller, the agreement's terms *as the policy reads them*, the
request with each field's classification label, the classification scheme,
the clock and the quota counters. A decision is then a pure function of one
recorded document, which is what makes the impact dry-run and the
differential test between engines exact. The input never carries field
values or subject keys, so it can be kept in the decision log.

``agreement_view`` is the only place that knows how agreement terms are
spelled; the policy sees one normalised shape (schemas/policy-input.schema.json).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator

from connectors.mapping.standard_pattern import Validator
from gateway.errors import ValidationFailed

__all__ = [
    "DEFAULT_LEVELS",
    "INPUT_SCHEMA_PATH",
    "QueryKind",
    "agreement_view",
    "build_policy_input",
    "verify_policy_input",
]

INPUT_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "policy-input.schema.json"
#: The default classification scheme, lowest first (docs/conventions.md).
DEFAULT_LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")

QueryKind = Literal["record", "verify", "aggregate"]


def build_policy_input(
    *,
    caller_department: str,
    caller_clearance: str,
    caller_caveats: Iterable[str] = (),
    caller_system: str | None = None,
    agreement_terms: Mapping[str, Any] | None,
    agreement_status: str | None = None,
    dataset: str,
    fields: Mapping[str, Mapping[str, Any] | None],
    purpose: str,
    now: datetime,
    usage_minute: int = 0,
    usage_day: int = 0,
    query_kind: QueryKind = "record",
    cohort_size: int | None = None,
    group_by: Sequence[str] | None = None,
    sums: Sequence[str] | None = None,
    scheme_levels: Iterable[str] = DEFAULT_LEVELS,
    scheme_name: str | None = None,
) -> dict[str, Any]:
    """Return the policy input for one exchange request.

    ``fields`` maps each requested field to its classification label
    (``{"level", "caveats", "personal"}`` from the canonical schema) or ``None``
    when the field is unlabelled. ``usage_*`` count the exchanges already made
    before this one. ``agreement_terms`` is ``None`` when no agreement resolved.
    ``group_by`` and ``sums`` name an aggregate's group-by and summed fields
    (``gateway.exchange.request_step.aggregate_spec``): the policy allows
    grouping and summing per field by the agreement's operation for it.
    """
    if now.tzinfo is None:
        raise ValidationFailed("policy input time must be timezone-aware")
    now_utc = now.astimezone(UTC)
    scheme: dict[str, Any] = {"levels": list(scheme_levels)}
    if scheme_name is not None:
        scheme["name"] = scheme_name
    caller: dict[str, Any] = {
        "department": caller_department,
        "clearance": caller_clearance,
        "caveats": sorted(set(caller_caveats)),
    }
    if caller_system is not None:
        caller["system"] = caller_system
    query: dict[str, Any] = {"kind": query_kind}
    if cohort_size is not None:
        query["cohort_size"] = cohort_size
    if group_by is not None:
        query["group_by"] = list(dict.fromkeys(group_by))
    if sums is not None:
        query["sums"] = list(dict.fromkeys(sums))
    agreement = None
    if agreement_terms is not None:
        agreement = agreement_view(agreement_terms, status=agreement_status)
    return {
        "schema_version": 1,
        "now": {
            "rfc3339": now_utc.isoformat().replace("+00:00", "Z"),
            "unix": int(now_utc.timestamp()),
        },
        "scheme": scheme,
        "caller": caller,
        "agreement": agreement,
        "request": {
            "dataset": dataset,
            "purpose": purpose,
            "fields": {name: _label(label) for name, label in fields.items()},
            "query": query,
        },
        "usage": {"minute": usage_minute, "day": usage_day},
    }


def agreement_view(terms: Mapping[str, Any], *, status: str | None = None) -> dict[str, Any]:
    """Normalise agreement terms into the shape the policy reads.

    Accepts the spellings an agreement document may use (datasets as a list or
    a map, fields as names or as name -> operation, the validity window nested
    or flat, times as RFC 3339 or unix seconds) so the policy has one shape.
    ``status`` is the lifecycle state held by the registry, not by the terms.
    """
    validity = terms.get("validity") or {}
    quotas = terms.get("quotas") or {}
    return {
        "id": str(terms.get("id", "")),
        "version": int(terms.get("version", 1)),
        "status": status if status is not None else str(terms.get("status", "active")),
        "provider": _party(terms.get("provider")),
        "consumer": _party(terms.get("consumer")),
        "not_before": _unix(
            validity.get("not_before", terms.get("not_before", terms.get("valid_from")))
        ),
        "not_after": _unix(
            validity.get("not_after", terms.get("not_after", terms.get("valid_until")))
        ),
        "ceiling": str(terms.get("ceiling") or terms.get("classification_ceiling") or ""),
        "purposes": [_code(p) for p in terms.get("purposes") or []],
        "legal_basis": _legal_basis(terms.get("legal_basis") or _purpose_bases(terms)),
        "datasets": _datasets(terms.get("datasets") or {}),
        "quotas": {
            key: int(quotas[key])
            for key in ("per_minute", "per_day")
            if quotas.get(key) is not None
        },
    }


def verify_policy_input(document: Mapping[str, Any]) -> None:
    """Raise ``ValidationFailed`` naming the first path where ``document`` breaks the schema."""
    validator = _validator()
    error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise ValidationFailed(f"policy input invalid at {where}: {error.message}")


@cache
def _validator() -> Draft202012Validator:
    schema = json.loads(INPUT_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Validator(schema)


def _label(label: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if label is None:
        return None
    out: dict[str, Any] = {}
    if label.get("level") is not None:
        out["level"] = label["level"]
    out["caveats"] = sorted(set(label.get("caveats") or []))
    if label.get("personal") is not None:
        out["personal"] = label["personal"]
    return out


def _party(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("department", value.get("id", ""))
    return str(value or "")


def _code(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("code", "")
    return str(value)


def _legal_basis(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("reference") or value.get("code") or value.get("text") or ""
    elif isinstance(value, list):
        value = "; ".join(_legal_basis(v) for v in value)
    return str(value or "")


def _purpose_bases(terms: Mapping[str, Any]) -> str:
    """Agreements name a legal basis per purpose; an unpermitted purpose is denied anyway."""
    purposes = terms.get("purposes") or []
    return "; ".join(
        str(p.get("legal_basis"))
        for p in purposes
        if isinstance(p, Mapping) and p.get("legal_basis")
    )


def _unix(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    raise ValidationFailed("agreement validity window needs not_before and not_after")


def _datasets(value: Any) -> dict[str, Any]:
    items: Iterable[tuple[str, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    else:
        items = ((str(d.get("id") or d.get("dataset")), d) for d in value)
    return {name: _dataset(spec) for name, spec in items}


def _dataset(spec: Mapping[str, Any]) -> dict[str, Any]:
    raw = spec.get("fields") or {}
    fields: dict[str, Any] = {}
    if isinstance(raw, Mapping):
        fields = {name: _operation(op) for name, op in raw.items()}
    else:
        for item in raw:
            if isinstance(item, str):
                fields[item] = {"operation": "pass"}
            else:
                fields[str(item["name"])] = _operation(item)
    for name, op in (spec.get("release") or spec.get("operations") or {}).items():
        fields[name] = _operation(op)
    out: dict[str, Any] = {"fields": fields}
    aggregate = spec.get("aggregate")
    min_k = aggregate.get("min_k") if isinstance(aggregate, Mapping) else spec.get("min_k")
    if min_k is not None:
        out["aggregate"] = {"min_k": int(min_k)}
    return out


def _operation(op: Any) -> dict[str, Any]:
    if op is None:
        return {"operation": "pass"}
    if isinstance(op, str):
        return {"operation": op}
    out = {k: v for k, v in dict(op).items() if k not in ("name", "op")}
    out["operation"] = op.get("operation", op.get("op", "pass"))
    return out
