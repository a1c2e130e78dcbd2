"""Fixtures for end-to-end exchange tests: sample departments and running gateways."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from examples.launch import Departments, launch
from tests._support.gateway import Gateway, running_gateway
from tests._support.servers import fresh_database, opa_server


@pytest.fixture(scope="package")
def departments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Departments]:
    """The four sample department systems, up for the whole package."""
    with launch(data_dir=tmp_path_factory.mktemp("departments")) as deps:
        yield deps


@pytest.fixture(scope="module")
def embedded_gateway(
    departments: Departments, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """The zero-setup default: SQLite and the embedded policy engine."""
    data = tmp_path_factory.mktemp("gw-embedded")
    with running_gateway(
        db_url=f"sqlite:///{data / 'accord.db'}", data_dir=data, departments_env=departments.env
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def production_gateway(
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
    pg_server_url: str,
) -> Iterator[Gateway]:
    """The production shape: PostgreSQL and a real OPA server of its own."""
    data = tmp_path_factory.mktemp("gw-production")
    with (
        opa_server() as opa_url,
        running_gateway(
            db_url=fresh_database(pg_server_url),
            data_dir=data,
            departments_env=departments.env,
            opa_url=opa_url,
        ) as gw,
    ):
        yield gw


@pytest.fixture(params=["embedded", "production"])
def gateway(request: pytest.FixtureRequest) -> Gateway:
    """Each end-to-end test runs on both stacks."""
    gw: Gateway = request.getfixturevalue(f"{request.param}_gateway")
    return gw


def subject_with(source: str) -> str:
    """A person id the given sample system holds (the sample data is deterministic)."""
    if source == "health":
        from examples.health_insurer.db import rows

        return str(rows()[0]["MEMBER_SSN"])
    if source == "claims":
        from examples.welfare_office.export import rows as claim_rows

        return str(claim_rows()[0]["CLAIMANT_ID"])
    from examples.synth import people

    return people()[0].person_id


def quota_counts(engine: sa.Engine, agreement: str) -> dict[str, int]:
    """The agreement's quota windows and their counts, as stored."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text('SELECT "window", count FROM usage_counter WHERE agreement_id = :a'),
            {"a": agreement},
        )
        return {str(w): int(c) for w, c in rows}
