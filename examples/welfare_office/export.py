"""The welfare office's nightly export: semicolon CSV files in a drop folder.

European conventions on purpose: ``;`` separator, ``DD-MM-YYYY`` dates,
``1.234,50`` amounts, two-digit benefit codes and one-letter statuses.
"""

from __future__ import annotations

import csv
import random
from decimal import Decimal
from pathlib import Path

from examples.synth import SEED, people

__all__ = ["BENEFIT_CODES", "COLUMNS", "STATUS_CODES", "rows", "write_export"]

BENEFIT_CODES = {"01": "unemployment", "02": "housing", "03": "child", "04": "disability"}
STATUS_CODES = {"O": "open", "A": "approved", "R": "rejected", "C": "closed"}
COLUMNS = ["CLAIM_REF", "CLAIMANT_ID", "BENEFIT", "STATUS", "FILED", "MONTHLY_AMT", "HH_SIZE"]


def _euro(amount: Decimal) -> str:
    whole, frac = f"{amount:.2f}".split(".")
    groups: list[str] = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    return ".".join(groups) + "," + frac


def _filed(rng: random.Random) -> str:
    day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(2019, 2025)
    return f"{day:02d}-{month:02d}-{year}"


def rows() -> list[dict[str, str]]:
    rng = random.Random(SEED + 4)
    pop = people()
    sizes: dict[str, int] = {}
    for p in pop:
        sizes[p.household_id] = sizes.get(p.household_id, 0) + 1
    out = []
    for i, p in enumerate(pop):
        if p.household_role == "child" or rng.random() < 0.55:
            continue
        out.append(
            {
                "CLAIM_REF": f"WB{2025000 + i}",
                "CLAIMANT_ID": p.person_id,
                "BENEFIT": rng.choice(list(BENEFIT_CODES)),
                "STATUS": rng.choice(list(STATUS_CODES)),
                "FILED": _filed(rng),
                "MONTHLY_AMT": _euro(Decimal(rng.randint(5_000, 250_000)) / 100),
                "HH_SIZE": str(sizes[p.household_id]),
            }
        )
    return out


def write_export(directory: Path, stamp: str = "20251124") -> Path:
    """Write ``claims_<stamp>.csv`` atomically into the drop folder."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"claims_{stamp}.csv"
    tmp = directory / f".claims_{stamp}.csv.part"
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, delimiter=";")
        writer.writeheader()
        writer.writerows(rows())
    tmp.replace(target)
    return target
