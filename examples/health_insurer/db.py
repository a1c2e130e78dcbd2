"""The health insurer's own database, seeded with deterministic synthetic data.

Legacy-style schema on purpose: upper-case column names, dates as integers
``YYYYMMDD``, numeric status codes, premiums in cents. The same DDL runs on
SQLite (the demo) and PostgreSQL (the SQL connector's real-database tests).
"""

from __future__ import annotations

import random

import sqlalchemy as sa

from examples.synth import SEED, people

__all__ = ["PLAN_CODES", "STATUS_CODES", "metadata", "seed"]

PLAN_CODES = {"BAS": "basic", "CMP": "comprehensive", "PRM": "premium"}
STATUS_CODES = {1: "active", 2: "suspended", 9: "terminated"}

metadata = sa.MetaData()
member_cover = sa.Table(
    "MEMBER_COVER",
    metadata,
    sa.Column("POLICY_NO", sa.String(12), primary_key=True),
    sa.Column("MEMBER_SSN", sa.String(11), nullable=False, unique=True),
    sa.Column("SURNAME", sa.String(60), nullable=False),
    sa.Column("PLAN_CD", sa.String(3), nullable=False),
    sa.Column("STATUS_CD", sa.Integer, nullable=False),
    sa.Column("START_YMD", sa.Integer, nullable=False),
    sa.Column("END_YMD", sa.Integer, nullable=True),
    sa.Column("PREMIUM_CENTS", sa.Integer, nullable=False),
    sa.Column("BRANCH", sa.String(20), nullable=False),
)


def rows() -> list[dict[str, object]]:
    rng = random.Random(SEED + 2)
    out = []
    for i, p in enumerate(people()):
        if rng.random() < 0.15:
            continue  # not insured here
        start = rng.randint(2000, 2024) * 10000 + rng.randint(1, 12) * 100 + rng.randint(1, 28)
        status = rng.choice([1, 1, 1, 1, 2, 9])
        end = None if status != 9 else start + rng.randint(1, 5) * 10000
        out.append(
            {
                "POLICY_NO": f"HI-{100000 + i}",
                "MEMBER_SSN": p.person_id,
                "SURNAME": p.family_name.upper(),
                "PLAN_CD": rng.choice(list(PLAN_CODES)),
                "STATUS_CD": status,
                "START_YMD": start,
                "END_YMD": end,
                "PREMIUM_CENTS": rng.randint(4500, 42000),
                "BRANCH": p.city,
            }
        )
    return out


def seed(url: str) -> str:
    """Create and fill the insurer's database at ``url`` (idempotent); returns the url."""
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(member_cover)).scalar():
                return url
            conn.execute(member_cover.insert(), rows())
    finally:
        engine.dispose()
    return url
