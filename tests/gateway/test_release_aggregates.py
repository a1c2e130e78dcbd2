"""Complementary cell suppression: no withheld count comes back by differencing.

A consumer who may group by each dimension alone and by their combination
knows every line total of a table (all dimensions fixed but one), so a line
with one withheld cell gives it away as total minus visible cells. Every line
that withholds anything withholds at least two cells holding at least k
subjects; the tables below check the rule, the chain it sets off, what a
missing group counts as, the sums, and that one dataset gets one answer.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.release_aggregates import aggregate, withheld_cells
from tests.gateway.release_support import ctx

Key = tuple[Any, ...]


def lines(counts: Mapping[Key, int]) -> list[list[Key]]:
    """Every line of the table: the groups that agree on all dimensions but one."""
    found: dict[tuple[int, Key], list[Key]] = defaultdict(list)
    for g in counts:
        for d in range(len(g)):
            found[(d, g[:d] + g[d + 1 :])].append(g)
    return list(found.values())


def recoverable(counts: Mapping[Key, int], shown: Mapping[Key, int]) -> dict[Key, int]:
    """What the review's attack gets: a line's total minus its visible cells,
    whenever exactly one group of the line is missing from the answer."""
    out = {}
    for line in lines(counts):
        missing = [g for g in line if g not in shown]
        if len(missing) == 1:
            out[missing[0]] = sum(counts[g] for g in line) - sum(shown.get(g, 0) for g in line)
    return out


def grid(rows: str) -> dict[Key, int]:
    """A 2-D table written as text: one row per line, ``-`` for a group that does not exist."""
    out = {}
    for r, row in enumerate(rows.split("\n")):
        for c, cell in enumerate(row.split()):
            if cell != "-":
                out[(f"r{r + 1}", f"c{c + 1}")] = int(cell)
    return out


# --------------------------------------------------------------------------- the rule


def test_a_lone_withheld_cell_sets_off_a_chain_through_rows_and_columns() -> None:
    counts = grid("2 10 20\n30 12 40\n50 60 70")
    # r1c1 is below k. Its column then needs a second cell (r2c1, the smallest
    # other); its row too (r1c2); r2c1 leaves row r2 with one, so r2c2 goes,
    # which also gives column c2 its second.
    assert withheld_cells(counts, 5) == {
        ("r1", "c1"),
        ("r2", "c1"),
        ("r1", "c2"),
        ("r2", "c2"),
    }
    shown = {g: n for g, n in counts.items() if g not in withheld_cells(counts, 5)}
    assert recoverable(counts, shown) == {}


def test_withheld_cells_of_a_line_hold_at_least_k_together() -> None:
    # 1 and 2 are two cells, but 3 < 5: the total minus the rest would tell
    # that a group of at most 3 exists. The smallest visible cell (9) joins them.
    counts = {("a",): 1, ("b",): 2, ("c",): 9, ("d",): 20, ("e",): 30}
    assert withheld_cells(counts, 5) == {("a",), ("b",), ("c",)}


def test_two_small_cells_that_reach_k_together_need_nothing_more() -> None:
    counts = {("a",): 3, ("b",): 4, ("c",): 9, ("d",): 20}
    assert withheld_cells(counts, 5) == {("a",), ("b",)}


def test_nothing_is_withheld_when_every_cell_reaches_k() -> None:
    assert withheld_cells({("a", 1): 5, ("a", 2): 7, ("b", 1): 9}, 5) == frozenset()


def test_ties_are_broken_by_the_group_whatever_the_order_of_the_data() -> None:
    counts = {("d",): 10, ("b",): 10, ("a",): 1, ("c",): 10}
    assert withheld_cells(counts, 5) == {("a",), ("b",)}
    records = [{"city": g[0]} for g, n in counts.items() for _ in range(n)]
    ob = {"city": {"operation": "aggregate", "min_k": 5}}
    answers = set()
    for seed in range(5):
        random.Random(seed).shuffle(records)
        res = aggregate(records, ob, ctx(), group_by=["city"])
        answers.add((tuple((c["city"], c["count"]) for c in res.cells), res.suppressed))
    assert answers == {((("c", 10), ("d", 10)), 2)}


def test_a_table_of_small_groups_is_withheld_whole() -> None:
    records = [{"city": "A"}, {"city": "B"}, {"city": "B"}, {"city": "C"}]
    res = aggregate(
        records, {"city": {"operation": "aggregate", "min_k": 5}}, ctx(), group_by=["city"]
    )
    assert res.cells == () and res.suppressed == 3


def test_one_small_group_beside_one_large_takes_the_large_one_with_it() -> None:
    # Total minus the large cell would be the small one: both go.
    assert withheld_cells({("a",): 1, ("b",): 40}, 5) == {("a",), ("b",)}


def test_an_absent_group_is_a_visible_zero() -> None:
    # Row r2 holds only r2c1: with r2c2 and r2c3 known to be empty, r2c1 is row
    # r2's total, which the consumer can ask for, so withholding it would hide
    # nothing. Column c1 takes the next smallest instead (r3c1), not r2c1.
    counts = grid("2 8 9\n6 - -\n7 30 40")
    held = withheld_cells(counts, 5)
    assert ("r2", "c1") not in held
    assert {("r1", "c1"), ("r3", "c1")} <= held
    shown = {g: n for g, n in counts.items() if g not in held}
    assert ("r1", "c1") not in recoverable(counts, shown)


def peel(counts: Mapping[Key, int], shown: Mapping[Key, int], k: int) -> dict[Key, int]:
    """A patient attacker: solves every line with one unknown left, again and again,
    from line totals of k or more and what is visible or already solved."""
    known = dict(shown)
    while True:
        found = {}
        for line in lines(counts):
            total = sum(counts[g] for g in line)
            unknown = [g for g in line if g not in known]
            if total >= k and len(unknown) == 1:
                found[unknown[0]] = total - sum(known[g] for g in line if g in known)
        if not found:
            return {g: n for g, n in known.items() if g not in shown}
        known |= found


def test_a_cell_the_consumer_can_compute_is_no_cover() -> None:
    counts = grid("- 12 - -\n13 8 8 -\n2 - 13 4")
    # The line rule alone withholds r3c1 (2), r3c4 (4), r2c1 and r2c2. But r1c2
    # is the only group of row r1, so column c2's total minus it gives r2c2;
    # row r2 then gives r2c1 and column c1 gives r3c1 = 2. Taking r2c2 as known,
    # row r2 needs r2c3, and column c3 then needs r3c3.
    held = withheld_cells(counts, 5)
    assert held == set(counts) - {("r1", "c2")}
    solved = peel(counts, {g: n for g, n in counts.items() if g not in held}, 5)
    assert all(counts[g] >= 5 for g in solved)


# --------------------------------------------------------------------------- sums


def test_a_withheld_group_loses_its_sums_too_and_sums_do_not_difference() -> None:
    sizes = {("Northbridge", "f"): 9, ("Northbridge", "m"): 7, ("Northbridge", "x"): 2}
    sizes |= {("Eastmoor", "f"): 12, ("Eastmoor", "m"): 6, ("Eastmoor", "x"): 8}
    records = [
        {"city": c, "sex": s, "amount": "99.00" if s == "x" else "10.00"}
        for (c, s), n in sizes.items()
        for _ in range(n)
    ]
    ob = {f: {"operation": "aggregate", "min_k": 5} for f in ("city", "sex", "amount")}
    both = aggregate(records, ob, ctx(), group_by=["city", "sex"], measures=["sum(amount)"])
    city = aggregate(records, ob, ctx(), group_by=["city"], measures=["sum(amount)"])
    shown = {(c["city"], c["sex"]): Decimal(c["sum_amount"]) for c in both.cells}
    assert ("Northbridge", "x") not in shown  # 2 < 5, and its sum with it
    assert both.suppressed == len(sizes) - len(shown)
    for total in city.cells:
        hidden = [g for g in sizes if g[0] == total["city"] and g not in shown]
        rest = Decimal(total["sum_amount"]) - sum(
            (v for g, v in shown.items() if g[0] == total["city"]), Decimal(0)
        )
        # The city's sum minus its visible sums is spread over two groups or more,
        # which together hold at least k people.
        assert len(hidden) >= 2 and rest > 0
        assert sum(sizes[g] for g in hidden) >= 5


# --------------------------------------------------------------------------- property


def _alone(counts: Mapping[Key, int]) -> set[Key]:
    return {line[0] for line in lines(counts) if len(line) == 1}


tables = st.integers(min_value=1, max_value=3).flatmap(
    lambda dims: st.dictionaries(
        st.tuples(*[st.sampled_from("abcd") for _ in range(dims)]),
        st.integers(min_value=1, max_value=25),
        min_size=1,
        max_size=30,
    )
)


@settings(max_examples=300, deadline=None)
@given(counts=tables, k=st.integers(min_value=2, max_value=12))
def test_every_line_that_withholds_holds_two_cells_and_k_subjects(
    counts: dict[Key, int], k: int
) -> None:
    held = withheld_cells(counts, k)
    assert all(n >= k for g, n in counts.items() if g not in held)  # no visible cell below k
    alone = _alone(counts)
    for line in lines(counts):
        mine = [g for g in line if g in held]
        if not mine:
            continue
        spare = [g for g in line if g not in held and g not in alone]
        # Either the rule holds, or the line has nothing left that could hide
        # anything (each visible cell is the total of another line).
        assert (len(mine) >= 2 and sum(counts[g] for g in mine) >= k) or not spare
    assert withheld_cells(dict(reversed(list(counts.items()))), k) == held
