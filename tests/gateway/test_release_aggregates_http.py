"""The security review's differencing attack, replayed over HTTP against a running gateway.

The demo agreement lets the welfare office group ``person-statistics`` by
city, sex and marital status with k = 5. Each answer alone hid its small
cells, but the city totals minus the visible city-by-sex cells gave back the
one hidden cell of a city (Southvale, sex other: 2 people). Three allowed
questions must now give back nothing below k.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from examples.launch import launch
from tests._support.gateway import Gateway, running_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The zero-setup stack (SQLite, embedded policy) in front of the civil registry."""
    data: Path = tmp_path_factory.mktemp("gw-aggregates")
    with (
        launch(["civil_registry"], data_dir=tmp_path_factory.mktemp("civil")) as deps,
        running_gateway(
            db_url=f"sqlite:///{data / 'accord.db'}", data_dir=data, departments_env=deps.env
        ) as gw,
    ):
        yield gw


def counts(gw: Gateway, *group_by: str) -> tuple[dict[tuple[str, ...], int], Mapping[str, Any]]:
    answer = gw.client("welfare-office").exchange(
        agreement="welfare-person-lookup",
        dataset="person-statistics",
        purpose="benefit-eligibility",
        query={"kind": "aggregate", "group_by": list(group_by)},
    )
    cells = {tuple(c[g] for g in group_by): c["count"] for c in answer.result["cells"]}
    return cells, answer.result


def test_three_query_differencing_recovers_no_withheld_cell(gateway: Gateway) -> None:
    by_city = {g[0]: n for g, n in counts(gateway, "address_city")[0].items()}
    by_sex = {g[0]: n for g, n in counts(gateway, "sex")[0].items()}
    both, result = counts(gateway, "address_city", "sex")
    k = result["min_k"]
    assert k == 5
    assert all(n >= k for n in both.values())
    assert result["suppressed"] == len(by_city) * len(by_sex) - len(both) > 0
    # The review's attack, both ways: a line total minus the visible cells of the
    # line, whenever it leaves exactly one group unaccounted for.
    recovered: dict[tuple[str, ...], int] = {}
    for dim, totals in ((0, by_city), (1, by_sex)):
        seen: dict[str, dict[tuple[str, ...], int]] = defaultdict(dict)
        for cell, n in both.items():
            seen[cell[dim]][cell] = n
        others = by_sex if dim == 0 else by_city
        for value, total in totals.items():
            line = [(value, o) if dim == 0 else (o, value) for o in others]
            missing = [g for g in line if g not in seen[value]]
            rest = total - sum(seen[value].values())
            if len(missing) == 1:
                recovered[missing[0]] = rest
            # What is left over spreads over two groups or more, k people at least.
            assert not missing or (len(missing) >= 2 and rest >= k)
    assert recovered == {}
    assert ("Southvale", "other") not in both  # the review's recovered cell stays hidden


def test_the_same_question_gets_the_same_cells(gateway: Gateway) -> None:
    first, _ = counts(gateway, "address_city", "marital_status")
    again, _ = counts(gateway, "address_city", "marital_status")
    assert first == again and all(n >= 5 for n in first.values())
