"""Step 6 of an exchange: turn canonical records into what the consumer may receive.

The signed agreement bounds every decision (``verify_within_agreement``, run
before the provider is asked and again here): its consumer, a purpose it lists,
a dataset it covers, and obligations no wider than its term for each field
(``gateway.release_obligations.verify_within_terms``). Within that bound the
decision's obligations are the only source of what leaves: a record query
applies them field by field (anything without an obligation is dropped), a
verify query answers its predicate with true or false, an aggregate withholds
every cell below the agreement's ``min_k`` (never a smaller k a policy
wrote), grouping only by what the agreement's ``aggregate`` lists, and enough
others that no withheld cell can be worked out from the group totals
(``suppressed`` counts them all, without telling which were small). A
consumer's own schema mapping runs last, on released values only, so it can
rename and reshape but never reveal more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from connectors import ConnectorError
from connectors.mapping.compiler import CompiledMapping
from gateway.agreements.terms import AgreementTerms
from gateway.exchange.schemas import ExchangeRequest
from gateway.policy.engine import Decision
from gateway.release import ReleaseContext, apply_release, evaluate_predicate
from gateway.release_aggregates import aggregate
from gateway.release_obligations import (
    ExceedsAgreement,
    ReleaseError,
    normalise_obligations,
    parse_predicate,
    verify_within_terms,
)

__all__ = ["released_result", "verify_within_agreement", "verify_within_classification"]

#: Personal-data kinds that may leave only under an agreement naming a legal basis.
_NEEDS_LEGAL_BASIS = frozenset({"sensitive", "special"})


def verify_within_agreement(
    *, request: ExchangeRequest, decision: Decision, terms: AgreementTerms, consumer: str
) -> Mapping[str, Any]:
    """Raise unless the agreement allows what the decision allowed; return the dataset's terms.

    The policy may only restrict what the signed agreement allows, so an allow for
    another consumer, a purpose or dataset the agreement does not name is 500
    ``decision_exceeds_agreement``, an obligation wider than the agreement's term
    for its field 500 ``obligation_exceeds_agreement``: the policy in force is
    wrong, nothing is released. An aggregate the agreement does not open (no
    ``aggregate.min_k``) is the former; one grouping by or measuring what the
    agreement's ``aggregate.group_by`` / ``measures`` do not list, when it lists
    them, is 422 ``aggregate_not_allowed`` (the shipped policy does not read those
    lists)."""
    if consumer != terms.consumer:
        raise ExceedsAgreement(
            f"the policy allowed {consumer!r}, which is not the agreement's consumer",
            code="decision_exceeds_agreement",
        )
    purposes = {p.get("code") for p in terms.doc.get("purposes", []) if isinstance(p, Mapping)}
    if request.purpose not in purposes:
        raise ExceedsAgreement(
            f"the policy allowed purpose {request.purpose!r}, which the agreement does not list",
            code="decision_exceeds_agreement",
        )
    dataset = terms.dataset(request.dataset)
    if dataset is None or not isinstance(dataset.get("fields"), Mapping):
        raise ExceedsAgreement(
            f"the policy allowed dataset {request.dataset!r}, which the agreement does not cover",
            code="decision_exceeds_agreement",
        )
    spec = dataset.get("aggregate")
    min_k = int(spec["min_k"]) if isinstance(spec, Mapping) and "min_k" in spec else None
    query = request.query
    if query.kind == "aggregate" and not (isinstance(spec, Mapping) and min_k is not None):
        raise ExceedsAgreement(
            f"the policy allowed an aggregate of {request.dataset!r}, "
            "which the agreement does not open to aggregates",
            code="decision_exceeds_agreement",
        )
    verify_within_terms(decision.obligations, dataset["fields"], min_k=min_k)
    if query.kind == "aggregate" and isinstance(spec, Mapping):
        for key, asked in (("group_by", query.group_by), ("measures", query.measures)):
            listed = spec.get(key)
            beyond = sorted(set(asked) - set(listed)) if isinstance(listed, list) else []
            if beyond:
                raise ReleaseError(
                    f"the agreement's aggregate {key} does not list {', '.join(beyond)}",
                    code="aggregate_not_allowed",
                )
    return dataset


def verify_within_classification(
    obligations: Mapping[str, Any], labels: Mapping[str, Any], policy_input: Mapping[str, Any]
) -> None:
    """Raise unless every field the decision releases (any operation but ``drop``)
    is within the agreement's ceiling and the caller's clearance, needs no caveat
    the caller lacks and, if it is sensitive or special personal data, leaves under
    an agreement naming a legal basis.

    The policy judges this; here it is judged again on the same policy input, with
    the same fail-closed reading (a field without a level counts as the scheme's
    highest level, a level the scheme does not know as above them all, a ceiling or
    clearance it does not know as below them all), so a policy version that skips
    it releases nothing: 500 ``decision_exceeds_agreement``. ``labels`` are the
    canonical model's, for every field, so an obligation for a field the request
    did not name is judged too."""
    levels = [str(level) for level in policy_input["scheme"]["levels"]]
    rank = {level: i for i, level in enumerate(levels)}
    agreement = policy_input.get("agreement") or {}
    caller = policy_input["caller"]
    grants = (
        ("the agreement's ceiling", agreement.get("ceiling")),
        ("the caller's clearance", caller.get("clearance")),
    )
    held = {c for c in caller.get("caveats") or () if isinstance(c, str)}
    basis = agreement.get("legal_basis")
    for name, op in sorted(normalise_obligations(obligations).items()):
        if op.name == "drop":
            continue
        label = labels.get(name)
        label = label if isinstance(label, Mapping) else {}
        level = label.get("level")
        field_rank = rank.get(level, len(levels)) if isinstance(level, str) else len(levels) - 1
        for what, grant in grants:
            if field_rank > (rank.get(grant, -1) if isinstance(grant, str) else -1):
                raise ExceedsAgreement(
                    f"the policy releases field {name!r}, classified above {what}",
                    code="decision_exceeds_agreement",
                )
        caveats = label.get("caveats")
        needed = {c for c in caveats if isinstance(c, str)} if isinstance(caveats, list) else set()
        if needed - held:
            raise ExceedsAgreement(
                f"the policy releases field {name!r}, which needs caveats the caller lacks: "
                + ", ".join(sorted(needed - held)),
                code="decision_exceeds_agreement",
            )
        if label.get("personal") in _NEEDS_LEGAL_BASIS and not (isinstance(basis, str) and basis):
            raise ExceedsAgreement(
                f"the policy releases field {name!r}, {label['personal']} personal data, "
                "under an agreement that names no legal basis",
                code="decision_exceeds_agreement",
            )


def released_result(
    *,
    request: ExchangeRequest,
    records: Sequence[Mapping[str, Any]],
    decision: Decision,
    terms: AgreementTerms,
    agreement_id: str,
    consumer: str,
    root_secret: bytes,
    today: date,
    target: CompiledMapping | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The response ``result`` and the operation applied to each released field.

    Checks the decision against ``terms`` again (``verify_within_agreement``): this
    step never trusts obligations it has not held to the agreement itself."""
    dataset = verify_within_agreement(
        request=request, decision=decision, terms=terms, consumer=consumer
    )
    ctx = ReleaseContext(
        agreement_id=agreement_id, consumer=consumer, root_secret=root_secret, today=today
    )
    obligations = {k: dict(v) for k, v in decision.obligations.items()}
    ops = normalise_obligations(obligations)
    query = request.query
    if query.kind == "verify":
        answer = evaluate_predicate(records[0], query.predicate, obligations, ctx)
        fname = str(parse_predicate(query.predicate)[1])
        return (
            {"kind": "verify", "predicate": query.predicate, "result": answer},
            {fname: "verify_only"},
        )
    if query.kind == "aggregate":
        agg = aggregate(
            records,
            obligations,
            ctx,
            group_by=query.group_by,
            measures=query.measures,
            # The agreement's k is the floor (verify_within_agreement refused an
            # aggregate it does not open); the obligations may only raise it.
            min_k=int(dataset["aggregate"]["min_k"]),
        )
        used = set(agg.group_by) | {m[4:-1] for m in agg.measures if m.startswith("sum(")}
        return (
            {
                "kind": "aggregate",
                "group_by": list(agg.group_by),
                "measures": list(agg.measures),
                "min_k": agg.min_k,
                "cells": [dict(c) for c in agg.cells],
                "suppressed": agg.suppressed,
            },
            # What each field truly left as: its obligation (``generalise`` for a
            # field grouped by its generalised value), not one label for all.
            {f: ops[f].name for f in sorted(used)},
        )
    released = apply_release(records, obligations, ctx)
    applied = {
        f: op.name
        for f, op in ops.items()
        if op.name not in ("drop", "verify_only", "aggregate") and any(f in r for r in released)
    }
    if target is not None:
        try:
            released = [target.map(r, partial=True) for r in released]
        except ConnectorError as exc:
            raise ReleaseError(
                f"the consumer's schema mapping failed: {exc.detail}", code="target_mapping_failed"
            ) from exc
    return {"kind": "record", "records": released}, applied
