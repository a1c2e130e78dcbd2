"""Fixtures for end-to-end exchange tests: sample departments and running gateways."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from examples.launch import Departments, launch
from tests._support.gateway import Gateway, running_gateway, sqlite_gateway
from tests._support.servers import fresh_database, opa_server


@pytest.fixture(scope="package")
def departments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Departments]:
    """The four sample department systems, up for the whole package."""
    with launch(data_dir=tmp_path_factory.mktemp("departments")) as deps:
        yield deps


#: The stores a ``gateway_on_store`` fixture is parametrised over.
STORES = ["sqlite", "postgresql"]


@contextlib.contextmanager
def gateway_on_store(
    request: pytest.FixtureRequest, departments: Departments, data: Path, **options: Any
) -> Iterator[Gateway]:
    """A running gateway on the store the fixture's param names (one of ``STORES``):
    SQLite in ``data``, or a fresh PostgreSQL database; ``options`` go to
    ``running_gateway``."""
    if request.param == "sqlite":
        db_url = f"sqlite:///{data / 'accord.db'}"
    else:
        db_url = fresh_database(request.getfixturevalue("pg_server_url"))
    with running_gateway(
        db_url=db_url, data_dir=data, departments_env=departments.env, **options
    ) as gw:
        yield gw


@contextlib.contextmanager
def production_stack(
    departments: Departments, data: Path, pg_server_url: str, **options: Any
) -> Iterator[Gateway]:
    """The production shape: PostgreSQL and a real OPA server of its own."""
    with (
        opa_server() as opa_url,
        running_gateway(
            db_url=fresh_database(pg_server_url),
            data_dir=data,
            departments_env=departments.env,
            opa_url=opa_url,
            **options,
        ) as gw,
    ):
        yield gw


@pytest.fixture(scope="module")
def embedded_gateway(
    departments: Departments, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """The zero-setup default: SQLite and the embedded policy engine."""
    with sqlite_gateway(tmp_path_factory.mktemp("gw-embedded"), departments.env) as gw:
        yield gw


@pytest.fixture(scope="module")
def production_gateway(
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
    pg_server_url: str,
) -> Iterator[Gateway]:
    """The production shape: PostgreSQL and a real OPA server of its own."""
    data = tmp_path_factory.mktemp("gw-production")
    with production_stack(departments, data, pg_server_url) as gw:
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
