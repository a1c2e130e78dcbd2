"""Aggregate release: counts and sums grouped by allowed fields, small cells withheld.

The agreement's ``aggregate.min_k`` (carried in the obligations) is the floor:
every cell counting fewer subjects than k is suppressed and only its number is
reported. Grouping may use generalised values (year, district, band) so cells
are coarse enough to be large.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.release import ReleaseContext, generalise_value, to_number
from gateway.release_obligations import (
    ReleaseError,
    ReleaseMisconfigured,
    normalise_obligations,
)

__all__ = ["AggregateResult", "aggregate"]


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """Cells at or above k; ``suppressed`` counts the cells withheld."""

    group_by: tuple[str, ...]
    measures: tuple[str, ...]
    min_k: int
    cells: tuple[Mapping[str, Any], ...]
    suppressed: int


_SUM = re.compile(r"^sum\(([a-z][a-z0-9_]*)\)$")


def aggregate(
    records: Iterable[Mapping[str, Any]],
    obligations: Mapping[str, Any],
    ctx: ReleaseContext,
    *,
    group_by: Sequence[str],
    measures: Sequence[str] = ("count",),
    min_k: int = 5,
) -> AggregateResult:
    """Counts and sums grouped by allowed fields; cells below k are suppressed."""
    ops = normalise_obligations(obligations)
    k = max([min_k, *(int(o.params.get("min_k", 0)) for o in ops.values())])
    if k < 2:
        raise ReleaseMisconfigured("aggregates need min_k of at least 2")
    usable = ("aggregate", "generalise", "pass")
    for g in group_by:
        if g not in ops or ops[g].name not in usable:
            raise ReleaseError(f"grouping by {g!r} is not allowed", code="aggregate_not_allowed")
    sums = []
    for m in measures:
        hit = _SUM.match(m)
        if m != "count" and hit is None:
            raise ReleaseError(f"unknown measure {m!r}", code="aggregate_not_allowed")
        if hit is not None:
            if hit[1] not in ops or ops[hit[1]].name not in ("aggregate", "pass"):
                raise ReleaseError(
                    f"summing {hit[1]!r} is not allowed", code="aggregate_not_allowed"
                )
            sums.append(hit[1])
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for rec in records:
        group = tuple(
            None
            if rec.get(g) is None
            else (
                generalise_value(rec[g], ops[g].params, ctx)
                if ops[g].name == "generalise"
                else rec[g]
            )
            for g in group_by
        )
        acc = cells.setdefault(group, [0, *(Decimal(0) for _ in sums)])
        acc[0] += 1
        for i, s in enumerate(sums, start=1):
            if rec.get(s) is not None:
                acc[i] += to_number(rec[s])
    kept, suppressed = [], 0
    for group, acc in sorted(cells.items(), key=lambda kv: [str(v) for v in kv[0]]):
        if acc[0] < k:
            suppressed += 1
            continue
        cell: dict[str, Any] = dict(zip(group_by, group, strict=True))
        if "count" in measures:
            cell["count"] = acc[0]
        for i, s in enumerate(sums, start=1):
            cell[f"sum_{s}"] = format(acc[i], "f")
        kept.append(cell)
    return AggregateResult(tuple(group_by), tuple(measures), k, tuple(kept), suppressed)
