"""A provider connector that cannot be built as configured is the operator's fault.

The gateway answers 500 ``connector_misconfigured`` (never a 4xx that blames the
caller), says nothing of the configuration's specifics to the caller, logs them
for the operator, audits the exchange as failed and releases nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from examples.launch import Departments
from gateway.client import GatewayFault
from tests._support.gateway import running_gateway
from tests.exchange.conftest import subject_with

PERSON = {
    "agreement": "welfare-person-lookup",
    "dataset": "person",
    "purpose": "benefit-eligibility",
}


def test_a_placeholder_without_a_value_is_a_server_fault(
    departments: Departments, tmp_path: Path
) -> None:
    env = {k: v for k, v in departments.env.items() if k != "CIVIL_REGISTRY_TOKEN"}
    assert "CIVIL_REGISTRY_TOKEN" in departments.env  # the demo's connector needs it
    with running_gateway(
        db_url=f"sqlite:///{tmp_path / 'accord.db'}", data_dir=tmp_path, departments_env=env
    ) as gw:
        client = gw.client("welfare-office")
        with pytest.raises(GatewayFault) as err:
            client.exchange(**PERSON, query={"kind": "record", "subject": subject_with("civil")})
        problem = err.value.problem
        assert (err.value.status, err.value.code) == (500, "connector_misconfigured")
        assert problem["exchange_id"]
        assert "CIVIL_REGISTRY_TOKEN" not in json.dumps(problem)  # the operator's detail
        assert gw.audit_cli("verify").returncode == 0
        log_text = "".join(p.read_text() for p in tmp_path.glob("gateway-*.log"))
    assert "connector_misconfigured" in log_text and "CIVIL_REGISTRY_TOKEN" in log_text
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'accord.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT data FROM audit_entries WHERE exchange_id = ?", (problem["exchange_id"],)
            ).all()
    finally:
        engine.dispose()
    entries = [json.loads(r[0]) for r in rows]
    assert [(e["outcome"], e.get("status")) for e in entries] == [("failed", 500)]
    assert "response_sha256" not in entries[0]
