"""An agreement's datasets against the canonical models they name.

A field the model does not have can never be released: the mapping produces
only the model's fields, and the classification labels come from the model.
Such a field in signed terms is a drafting error that both parties signed, or
terms written against another model; either way the agreement would promise
something the gateway cannot honour, so it is refused when submitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.interface import ConnectorError
from connectors.mapping.canonical import canonical_schema
from gateway.agreements.terms import AgreementTerms
from gateway.errors import AgreementError

__all__ = ["verify_dataset_fields"]


def _model_fields(model: str) -> frozenset[str]:
    try:
        schema: Mapping[str, Any] = canonical_schema(model)
    except ConnectorError as exc:
        raise AgreementError(
            f"model {model!r} is not a registered canonical model", code="unknown_model"
        ) from exc
    return frozenset(schema.get("properties", {}))


def verify_dataset_fields(terms: AgreementTerms) -> None:
    """Raise unless every dataset names a known model and only that model's fields.

    Every dataset is checked before raising, so one refusal names every unknown
    field of every dataset (``extra.unknown_fields``: dataset id -> field names).
    """
    unknown: dict[str, list[str]] = {}
    for ds in terms.doc["datasets"]:
        fields = set(ds["fields"])
        group_by = ds.get("aggregate", {}).get("group_by", [])
        missing = sorted((fields | set(group_by)) - _model_fields(str(ds["model"])))
        if missing:
            unknown[str(ds["id"])] = missing
    if unknown:
        named = "; ".join(
            f"dataset {ds!r} ({_model_of(terms, ds)}): {', '.join(names)}"
            for ds, names in unknown.items()
        )
        raise AgreementError(
            f"fields not in the dataset's model: {named}",
            code="unknown_fields",
            extra={"unknown_fields": unknown},
        )


def _model_of(terms: AgreementTerms, dataset_id: str) -> str:
    ds = terms.dataset(dataset_id)
    return str(ds["model"]) if ds else "?"
