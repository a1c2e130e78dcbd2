"""Fixtures for the connector suites: real sample departments and a hostile server.

The sample departments run as subprocesses on free loopback ports for the
whole session (``examples.launch``); the health insurer is also seeded into a
fresh real PostgreSQL database so the SQL connector is tested on both
back ends. Every connector kind is offered to the shared contract suite
through the ``case`` fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.config import build_connector
from connectors.interface import Connector
from examples.launch import ROOT, Departments, launch
from examples.synth import people
from tests._support.servers import free_port, wait_http


@pytest.fixture(scope="session")
def departments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Departments]:
    with launch(data_dir=tmp_path_factory.mktemp("departments")) as deps:
        yield deps


@pytest.fixture
def health_pg_url(pg_url: str) -> str:
    from examples.health_insurer.db import seed

    return seed(pg_url)


@dataclass
class Case:
    """One connector under the shared contract suite, with keys known to exist or not."""

    kind: str
    config: dict[str, Any]
    entity: str
    key: str
    missing_key: str
    department: str
    pageable: bool = True


def _first(keys: list[str], present: set[str]) -> str:
    return next(k for k in keys if k in present)


def _cases(deps: Departments, health_pg: str | None) -> dict[str, Case]:
    ids = [p.person_id for p in people()]
    from examples.health_insurer.db import rows as health_rows
    from examples.tax_authority.app import tax_records
    from examples.welfare_office.export import rows as welfare_rows

    insured = {r["MEMBER_SSN"] for r in health_rows()}
    taxed = set(tax_records())
    claimants = {r["CLAIMANT_ID"] for r in welfare_rows()}
    missing = "00000000000"
    out = {
        "rest": Case(
            "rest", deps.config("civil_registry"), "citizen", ids[0], missing, "civil_registry"
        ),
        "sql-sqlite": Case(
            "sql",
            deps.config("health_insurer"),
            "member_cover",
            _first(ids, insured),
            missing,
            "health_insurer",
        ),
        "soap": Case(
            "soap",
            deps.config("tax_authority"),
            "tax_status",
            _first(ids, taxed),
            missing,
            "tax_authority",
            pageable=False,
        ),
        "csv": Case(
            "csv",
            deps.config("welfare_office"),
            "claim",
            _first(ids, claimants),
            missing,
            "welfare_office",
        ),
    }
    if health_pg is not None:
        cfg = dict(deps.config("health_insurer"))
        cfg["url"] = health_pg
        out["sql-postgresql"] = Case(
            "sql", cfg, "member_cover", _first(ids, insured), missing, "health_insurer"
        )
    return out


@pytest.fixture(params=["rest", "sql-sqlite", "sql-postgresql", "soap", "csv"])
def case(request: pytest.FixtureRequest, departments: Departments) -> Case:
    pg = request.getfixturevalue("health_pg_url") if request.param == "sql-postgresql" else None
    return _cases(departments, pg)[request.param]


@pytest.fixture
async def connector(case: Case) -> AsyncIterator[Connector]:
    conn = build_connector(case.config)
    try:
        yield conn
    finally:
        await conn.aclose()


@pytest.fixture(scope="session")
def hostile_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.connectors.hostile_server", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def hits(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(url + "/_hits").json()
    return data


def reset(url: str) -> None:
    httpx.post(url + "/_reset")


WSDL = Path(ROOT) / "examples" / "tax_authority" / "service.wsdl"
