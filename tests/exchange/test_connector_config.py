"""A provider connector that cannot be built as configured is the operator's fault.

The gateway answers 500 ``connector_misconfigured`` (never a 4xx that blames the
caller), says nothing of the configuration's specifics to the caller, logs them
for the operator, audits the exchange as failed and releases nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from sqlmodel import Session

from examples.launch import EXAMPLES, Departments
from gateway.client import GatewayFault
from gateway.dbtypes import utcnow
from gateway.exchange.models import DatasetBinding
from gateway.services import Services
from tests._support.gateway import Gateway, sqlite_gateway
from tests._support.listener import RecordingListener, serving
from tests.exchange.conftest import subject_with

PERSON: dict[str, Any] = {
    "agreement": "welfare-person-lookup",
    "dataset": "person",
    "purpose": "benefit-eligibility",
}


def test_a_placeholder_without_a_value_is_a_server_fault(
    departments: Departments, tmp_path: Path
) -> None:
    env = {k: v for k, v in departments.env.items() if k != "CIVIL_REGISTRY_TOKEN"}
    assert "CIVIL_REGISTRY_TOKEN" in departments.env  # the demo's connector needs it
    with sqlite_gateway(tmp_path, env) as gw:
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


# -- placeholders are scoped to the binding's provider --------------------------

#: Values the attacker is after; none may reach the listener, a problem or the log.
SECRETS = {
    "TAX_AUTHORITY_TOKEN": "tax-secret-0f3a9c",  # another provider's credential
    "ACCORD_PSEUDONYM_SECRET": "pseudonym-root-7d1e42b6a9c05f38e2d4b7a1c6f09e53",
}


@pytest.fixture
def listener() -> Iterator[RecordingListener]:
    """The attacker's endpoint: remembers every request it is sent."""
    with serving(RecordingListener()) as server:
        yield server


def _civil_binding(base_url: str, token: str) -> dict[str, Any]:
    """civil-registry/person as the demo binds it, pointed at ``base_url`` with ``token``."""
    config = yaml.safe_load((EXAMPLES / "civil_registry" / "connector.yaml").read_text())
    spec = yaml.safe_load((EXAMPLES / "civil_registry" / "citizen.mapping.yaml").read_text())
    config["base_url"] = base_url
    config["auth"] = {**config["auth"], "token": token}
    return {
        "dataset_id": "person",
        "model": "person@1",
        "entity": "citizen",
        "connector": config,
        "mapping": spec,
        "subject_field": "person_id",
    }


def _secret_values(gw: Gateway) -> list[str]:
    names = ("HEALTH_INSURER_DB_URL", "ACCORD_DATABASE_URL", "ACCORD_DATA_DIR", *SECRETS)
    home = str(Path.home())
    return [gw.env[n] for n in names] + ([home] if len(home) > 5 else [])


def test_admin_binding_naming_another_providers_secret_is_refused(
    departments: Departments, tmp_path: Path, listener: RecordingListener
) -> None:
    """The review's attack: an admin binds civil-registry to their own listener with
    an auth token made of other providers' and the gateway's variables."""
    attacks = {
        "${HEALTH_INSURER_DB_URL}|dev=${ACCORD_DEV_MODE}|home=${HOME}": "HEALTH_INSURER_DB_URL",
        "${TAX_AUTHORITY_TOKEN}": "TAX_AUTHORITY_TOKEN",
        "${ACCORD_PSEUDONYM_SECRET}": "ACCORD_PSEUDONYM_SECRET",
        "${ACCORD_DATABASE_URL:-x}": "ACCORD_DATABASE_URL",
        "${HOME}": "HOME",
        "${CIVIL_REGISTRY_TOKEN}${HOME}": "HOME",
        "${CIVIL_REGISTRY_TOKEN:-${ACCORD_DATABASE_URL}}": "ACCORD_DATABASE_URL",
        "${home}": "home",
    }
    with sqlite_gateway(tmp_path, departments.env, extra_env=SECRETS) as gw:
        url = f"{gw.url}/v1/departments/civil-registry/datasets/person"
        for token, name in attacks.items():
            r = httpx.put(url, json=_civil_binding(listener.url, token), headers=gw.staff())
            assert r.status_code == 422, (token, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["code"] == "connector_config_invalid", token
            assert f"${{{name}}}" in problem["detail"] and "CIVIL_REGISTRY_" in problem["detail"]
            assert not any(v in r.text for v in _secret_values(gw))
        # Nothing was stored: the demo binding still answers from the real registry.
        answer = gw.client("welfare-office").exchange(
            **PERSON, query={"kind": "record", "subject": subject_with("civil")}
        )
        assert answer.records
        # The same binding with the provider's own variables is accepted.
        ok = _civil_binding("${CIVIL_REGISTRY_URL}", "${CIVIL_REGISTRY_TOKEN}")
        assert httpx.put(url, json=ok, headers=gw.staff()).status_code == 200
    assert listener.seen == []


def _store_raw(token: str, base_url: str) -> Any:
    """Write the civil-registry/person row straight into the database, bypassing
    the write-time check (a row from before the rule, or a direct SQL change)."""

    def prepare(services: Services) -> None:
        with Session(services.engine) as s:
            row = s.get(DatasetBinding, ("civil-registry", "person"))
            assert row is not None
            row.connector = _civil_binding(base_url, token)["connector"]
            row.updated_at = utcnow()
            s.add(row)
            s.commit()

    return prepare


def test_stored_out_of_scope_placeholder_is_a_server_fault_and_never_sent(
    departments: Departments, tmp_path: Path, listener: RecordingListener
) -> None:
    token = "${CIVIL_REGISTRY_TOKEN}|${TAX_AUTHORITY_TOKEN}|${ACCORD_PSEUDONYM_SECRET}"
    with sqlite_gateway(
        tmp_path, departments.env, extra_env=SECRETS, prepare=_store_raw(token, listener.url)
    ) as gw:
        secrets = _secret_values(gw)
        with pytest.raises(GatewayFault) as err:
            gw.client("welfare-office").exchange(
                **PERSON, query={"kind": "record", "subject": subject_with("civil")}
            )
        assert (err.value.status, err.value.code) == (500, "connector_misconfigured")
        assert not any(v in json.dumps(err.value.problem) for v in secrets)
        assert "TAX_AUTHORITY_TOKEN" not in json.dumps(err.value.problem)  # the operator's
        log_text = "".join(p.read_text() for p in tmp_path.glob("gateway-*.log"))
    assert listener.seen == []
    assert "connector_misconfigured" in log_text and "TAX_AUTHORITY_TOKEN" in log_text
    assert not any(v in log_text for v in SECRETS.values())
