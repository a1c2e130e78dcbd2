"""Aggregate release: counts and sums grouped by allowed fields, small cells withheld.

The agreement's ``aggregate.min_k`` is the floor: the release step passes it as
``min_k``, and a k the obligations carry can only raise it, never lower it. A
cell counting fewer subjects than k is withheld (primary suppression), and so
are enough other cells that no withheld count can be worked out by
differencing (complementary suppression): a consumer who may ask the same
groups with one dimension fewer knows every *line* total of the table (all
dimensions fixed but one; for one dimension, the whole table), so in every
line that withholds anything the withheld cells must be at least two, sum to
at least k, and not be computable from other lines. Grouping may use
generalised values (year, district, band) so cells are coarse enough to be
large. docs/exchange.md says what this protects against and what it does not.
"""

from __future__ import annotations

import re
from collections import defaultdict
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

__all__ = ["AggregateResult", "aggregate", "withheld_cells"]

Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """The released cells; ``suppressed`` counts every cell withheld, for any reason.

    Primary and complementary suppressions are deliberately not told apart:
    knowing how many withheld cells are below k narrows what each one can hold.
    """

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
    """Counts and sums grouped by allowed fields; see ``withheld_cells`` for what is withheld.

    The obligations carry each field's own operation (the policy refuses an
    aggregate over any other, policies/aggregation.rego): a group-by must be
    ``aggregate``, ``pass`` or ``generalise`` (grouped by the generalised value),
    a sum ``aggregate`` or ``pass``. Checked again here, so obligations written
    otherwise (another policy version) release nothing: 422 ``aggregate_not_allowed``.
    """
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
    cells: dict[Key, list[Any]] = {}
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
    # Every measure of a withheld group goes: its sums would difference like its count.
    withheld = withheld_cells({g: acc[0] for g, acc in cells.items()}, k)
    kept = []
    for group, acc in sorted(cells.items(), key=lambda kv: [str(v) for v in kv[0]]):
        if group in withheld:
            continue
        cell: dict[str, Any] = dict(zip(group_by, group, strict=True))
        if "count" in measures:
            cell["count"] = acc[0]
        for i, s in enumerate(sums, start=1):
            cell[f"sum_{s}"] = format(acc[i], "f")
        kept.append(cell)
    return AggregateResult(tuple(group_by), tuple(measures), k, tuple(kept), len(withheld))


# --------------------------------------------------------------------------- suppression


def withheld_cells(counts: Mapping[Key, int], k: int) -> frozenset[Key]:
    """The groups to withhold from a table of ``counts``: primary and complementary.

    ``counts`` holds only the groups that exist; a group the data does not have
    is read as a *visible zero*: the consumer may know it is empty (a category
    that cannot occur, an earlier answer), so it never hides anything and is
    never offered as cover. A line's total is taken as known to the consumer
    when it is at least k (below k the table with that dimension dropped
    withholds it).

    Every line holding a withheld cell must hold at least two, together at
    least k subjects; a line short of that gets its smallest visible cells
    withheld (ties broken by the group's values, so the same data gives the
    same answer), until no line changes. Then the cells the consumer could
    still compute (the only unknown of a line whose total is known) are taken
    as visible and the rule is checked again; a line that fails it gets one
    more cell and the whole round runs again. A cell alone in one of its lines
    equals that line's total, so it is never chosen as cover. Each round only
    adds cells, so this ends; when a line runs out of cells to add, it is as
    safe as the tables with fewer dimensions let it be (docs/exchange.md).
    """
    withheld = {g for g, n in counts.items() if n < k}
    if not withheld:
        return frozenset()
    lines = _lines(counts)
    totals = [sum(counts[g] for g in line) for line in lines]
    alone = {line[0] for line in lines if len(line) == 1}

    def complete(line: tuple[Key, ...], known: set[Key]) -> bool:
        """Adds the line's smallest spare cells until its withheld cells cover each other."""
        cover = [g for g in line if g in withheld and g not in known]
        spare = [g for g in line if g not in withheld and g not in alone]  # small first
        if not spare or (len(cover) >= 2 and sum(counts[g] for g in cover) >= k):
            return False
        while spare and (len(cover) < 2 or sum(counts[g] for g in cover) < k):
            withheld.add(spare[0])
            cover.append(spare.pop(0))
        return True

    while True:
        changed = True
        while changed:  # the line rule on what is withheld
            changed = False
            for line in lines:
                if any(g in withheld for g in line):
                    changed = complete(line, set()) or changed
        known = _computable(counts, withheld, lines, totals, k)
        # The same rule on what the consumer cannot compute; one line at a time.
        if not any(complete(line, known) for line in lines if any(g in withheld for g in line)):
            return frozenset(withheld)


def _order(group: Key) -> tuple[tuple[bool, str, str], ...]:
    """A total order on groups whatever their value types (None, str, int...)."""
    return tuple((v is None, type(v).__name__, str(v)) for v in group)


def _lines(counts: Mapping[Key, int]) -> list[tuple[Key, ...]]:
    """Every line of the table (all dimensions fixed but one), cells smallest first."""
    width = len(next(iter(counts)))
    found: dict[tuple[int, Key], list[Key]] = defaultdict(list)
    for g in counts:
        for d in range(width):
            found[(d, g[:d] + g[d + 1 :])].append(g)
    ordered = sorted(found, key=lambda line: (line[0], _order(line[1])))
    return [tuple(sorted(found[line], key=lambda g: (counts[g], _order(g)))) for line in ordered]


def _computable(
    counts: Mapping[Key, int],
    withheld: set[Key],
    lines: Sequence[tuple[Key, ...]],
    totals: Sequence[int],
    k: int,
) -> set[Key]:
    """Cells the consumer knows or can compute: visible ones and, line by line, the last unknown.

    Peeling only: it finds what differencing finds, not every linear combination.
    """
    known = {g for g in counts if g not in withheld}
    grew = True
    while grew:
        grew = False
        for line, total in zip(lines, totals, strict=True):
            if total < k:
                continue
            unknown = [g for g in line if g not in known]
            if len(unknown) == 1:
                known.add(unknown[0])
                grew = True
    return known
