"""Deterministic synthetic population shared by the sample department systems.

Every department holds a different slice of the same made-up people, so an
exchange can follow one person across systems. The generator is seeded: the
same seed gives byte-identical data on every machine, which tests and demos
rely on. No real person's data is, or resembles, anything here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

__all__ = ["Business", "Person", "businesses", "people"]

SEED = 20261125
GIVEN_F = ["Anna", "Maria", "Sofia", "Elena", "Ines", "Lena", "Mira", "Nora", "Olga", "Rita"]
GIVEN_M = ["Adam", "Bruno", "Carl", "David", "Emil", "Felix", "Hugo", "Ivan", "Jonas", "Karl"]
FAMILY = [
    "Berg",
    "Costa",
    "Dahl",
    "Evers",
    "Falk",
    "Gray",
    "Holm",
    "Ivers",
    "Janssen",
    "Kowal",
    "Lund",
    "Moreau",
    "Novak",
    "Ortiz",
    "Petrov",
    "Quist",
    "Rossi",
    "Silva",
    "Tamm",
    "Urban",
]
CITIES = [
    ("Northbridge", "10"),
    ("Eastmoor", "22"),
    ("Southvale", "35"),
    ("Westhaven", "47"),
    ("Lakeside", "58"),
    ("Hillcrest", "63"),
]
STREETS = [
    "Mill Lane",
    "Church Street",
    "Harbour Road",
    "Station Road",
    "Elm Avenue",
    "Bridge Street",
    "Market Square",
    "Orchard Way",
]
TRADES = ["Bakery", "Logistics", "Consulting", "Hardware", "Dental", "Print", "Software", "Garden"]


@dataclass(frozen=True)
class Person:
    person_id: str
    given_name: str
    family_name: str
    birth_date: date
    sex: str  # female | male | other
    marital_status: str  # single | married | divorced | widowed
    street: str
    city: str
    postcode: str
    household_id: str
    household_role: str  # head | spouse | child
    registered_at: datetime


@dataclass(frozen=True)
class Business:
    company_number: str
    trading_name: str
    legal_form: str
    registered_on: date
    activity_code: str
    status: str
    owner_id: str


def _person_id(rng: random.Random) -> str:
    body = f"{rng.randrange(10**9, 10**10):010d}"
    check = sum((i + 1) * int(c) for i, c in enumerate(body)) % 10
    return body + str(check)


def people(n: int = 240, seed: int = SEED) -> list[Person]:
    """``n`` people in households of 1-4 sharing an address."""
    rng = random.Random(seed)
    out: list[Person] = []
    hh = 0
    while len(out) < n:
        hh += 1
        city, prefix = rng.choice(CITIES)
        street = f"{rng.randint(1, 180)} {rng.choice(STREETS)}"
        postcode = f"{prefix}{rng.randint(10, 99)} {rng.choice('ABCDEFGH')}{rng.choice('KLMNPRS')}"
        family = rng.choice(FAMILY)
        size = rng.choice([1, 1, 2, 2, 3, 4])
        head_birth = date(1940, 1, 1) + timedelta(days=rng.randint(0, 365 * 62))
        for member in range(size):
            role = "head" if member == 0 else ("spouse" if member == 1 and size > 1 else "child")
            if role == "child":
                born = head_birth + timedelta(days=rng.randint(365 * 20, 365 * 40))
                born = min(born, date(2025, 12, 31))
            else:
                born = head_birth + timedelta(days=rng.randint(-2000, 2000) if member else 0)
            sex = rng.choice(["female", "male", "female", "male", "other"])
            given = rng.choice(GIVEN_F if sex == "female" else GIVEN_M)
            if role == "child":
                marital = "single"
            elif size > 1 and role in ("head", "spouse") and rng.random() < 0.8:
                marital = "married"
            else:
                marital = rng.choice(["single", "divorced", "widowed"])
            registered = datetime(2005, 1, 1, tzinfo=UTC) + timedelta(
                seconds=rng.randint(0, 20 * 365 * 86400)
            )
            out.append(
                Person(
                    _person_id(rng),
                    given,
                    family,
                    born,
                    sex,
                    marital,
                    street,
                    city,
                    postcode,
                    f"HH{hh:06d}",
                    role,
                    registered,
                )
            )
    return out[:n]


def businesses(n: int = 60, seed: int = SEED) -> list[Business]:
    rng = random.Random(seed + 1)
    owners = people()
    out = []
    for _ in range(n):
        owner = rng.choice(owners)
        out.append(
            Business(
                company_number=f"C{rng.randint(1000000, 9999999)}",
                trading_name=f"{owner.family_name} {rng.choice(TRADES)}",
                legal_form=rng.choice(["LTD", "PLC", "SOLE", "COOP"]),
                registered_on=date(1990, 1, 1) + timedelta(days=rng.randint(0, 365 * 35)),
                activity_code=f"{rng.randint(10, 99)}.{rng.randint(10, 99)}",
                status=rng.choice(["A", "A", "A", "D", "L"]),
                owner_id=owner.person_id,
            )
        )
    return out
