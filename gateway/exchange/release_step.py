"""Step 6 of an exchange: turn canonical records into what the consumer may receive.

The decision's obligations are the only source of what leaves: a record query
applies them field by field (anything without an obligation is dropped), a
verify query answers its predicate with true or false, an aggregate withholds
every cell below the agreement's k and enough others that no withheld cell can
be worked out from the group totals (``suppressed`` counts them all, without
telling which were small). A consumer's own schema mapping runs last,
on released values only, so it can rename and reshape but never reveal more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from connectors import ConnectorError
from connectors.mapping.compiler import CompiledMapping
from gateway.exchange.schemas import ExchangeRequest
from gateway.policy.engine import Decision
from gateway.release import ReleaseContext, apply_release, evaluate_predicate
from gateway.release_aggregates import aggregate
from gateway.release_obligations import ReleaseError, normalise_obligations, parse_predicate

__all__ = ["released_result"]


def released_result(
    *,
    request: ExchangeRequest,
    records: Sequence[Mapping[str, Any]],
    decision: Decision,
    agreement_id: str,
    consumer: str,
    root_secret: bytes,
    today: date,
    target: CompiledMapping | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The response ``result`` and the operation applied to each released field."""
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
            min_k=2,
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
