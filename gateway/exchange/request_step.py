"""Steps 1–3 of an exchange on the request side: parse it, and say what the policy judges.

The policy sees every field the request would release, each with its
classification label from the canonical model the agreement's dataset names;
a field the model does not label is passed unlabelled, which the policy reads
as the highest level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from connectors import ConnectorError
from connectors.mapping.canonical import classification_of
from gateway.agreements.terms import AgreementTerms
from gateway.errors import ValidationFailed
from gateway.exchange.schemas import ExchangeRequest
from gateway.nul_text import has_nul_escape
from gateway.release_obligations import parse_predicate

__all__ = ["MalformedJSON", "aggregate_spec", "labels_for", "parse_request", "requested_fields"]


class MalformedJSON(ValidationFailed):
    status = 400
    default_code = "malformed_json"
    title = "Malformed JSON"


def parse_request(body: bytes) -> ExchangeRequest:
    if has_nul_escape(body):  # refused on every route (gateway.nul_text)
        raise ValidationFailed("the body contains a NUL character (\\u0000)")
    try:
        return ExchangeRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"field": "/".join(str(p) for p in e["loc"]), "reason": e["msg"]}
            for e in exc.errors()[:50]
        ]
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise MalformedJSON(
                "the request body is not valid JSON", extra={"errors": errors}
            ) from exc
        first = errors[0] if errors else {"field": "", "reason": "invalid"}
        raise ValidationFailed(
            f"{first['field']}: {first['reason']}",
            code="validation_failed",
            extra={"errors": errors},
        ) from exc


def _dataset_terms(terms: AgreementTerms | None, dataset: str) -> Mapping[str, Any] | None:
    if terms is None:
        return None
    for ds in terms.doc.get("datasets", []):
        if ds.get("id") == dataset:
            return dict(ds)
    return None


def requested_fields(request: ExchangeRequest, terms: AgreementTerms | None) -> list[str]:
    """The fields the policy judges: named ones, the predicate's, or the agreement's.

    A record query naming none asks for every field the agreement releases in
    records (not those it releases only in aggregates or only as a verify
    answer, nor dropped ones). On a dataset with no such field that is all of
    them, so the policy refuses each by name (``aggregate_only``, ``verify_only``)
    instead of allowing an empty record that would still tell whether the subject
    exists. Without an agreement or dataset to take them from, ``*`` ("what the
    agreement allows"): the policy input names at least one field, and the policy
    judges only fields the agreement permits, so it refuses the missing agreement
    or dataset alone."""
    query = request.query
    if query.kind == "verify":
        return [str(parse_predicate(query.predicate)[1])]
    if query.kind == "aggregate":
        spec = aggregate_spec(request)
        return sorted(set(spec["group_by"]) | set(spec["sums"]))
    return list(request.fields or _record_fields(terms, request.dataset) or ["*"])


def aggregate_spec(request: ExchangeRequest) -> dict[str, list[str]]:
    """An aggregate's group-by and summed fields, as the policy input carries them
    (``build_policy_input(..., **aggregate_spec(request))``); empty for other queries.

    The policy judges each by the agreement's operation for it: a group-by field
    must be released as ``aggregate``, ``pass`` or ``generalise``, a summed one as
    ``aggregate`` or ``pass`` (policies/aggregation.rego)."""
    query = request.query
    if query.kind != "aggregate":
        return {}
    sums = [m[4:-1] for m in query.measures if m.startswith("sum(")]
    return {
        "group_by": list(dict.fromkeys(query.group_by)),
        "sums": list(dict.fromkeys(sums)),
    }


#: Operations under which a field leaves in a record (docs/connectors.md).
_IN_RECORDS = frozenset({"pass", "mask", "generalise", "pseudonymise"})


def _record_fields(terms: AgreementTerms | None, dataset: str) -> list[str]:
    ds = _dataset_terms(terms, dataset)
    fields: Mapping[str, Any] = ds.get("fields", {}) if ds else {}
    in_records = [name for name, op in fields.items() if _op_name(op) in _IN_RECORDS]
    return sorted(in_records or fields)


def _op_name(spec: Any) -> str | None:
    """An agreement field's operation, spelt as a bare name or as an object (or none: pass)."""
    if spec is None:
        return "pass"  # as the policy input reads it (gateway.policy.input)
    if isinstance(spec, str):
        return spec
    return str(spec.get("operation")) if isinstance(spec, Mapping) else None


def labels_for(terms: AgreementTerms | None, dataset: str) -> dict[str, Any]:
    """Classification labels of the dataset's canonical model (unknown: unlabelled)."""
    ds = _dataset_terms(terms, dataset)
    if not ds or not ds.get("model"):
        return {}
    try:
        return classification_of(str(ds["model"]))
    except ConnectorError:
        return {}
