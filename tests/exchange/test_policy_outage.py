"""The OPA server goes away mid-run: exchanges fail closed with policy_error, audited."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from examples.launch import Departments
from gateway.client import Unavailable
from tests._support.gateway import running_gateway
from tests._support.servers import free_port, opa_binary, wait_http
from tests.exchange.conftest import subject_with


def test_opa_outage_denies_with_policy_error_and_is_audited(
    departments: Departments, tmp_path: Path
) -> None:
    port = free_port()
    opa = subprocess.Popen(
        [str(opa_binary()), "run", "--server", "--addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        with running_gateway(
            db_url=f"sqlite:///{tmp_path / 'accord.db'}",
            data_dir=tmp_path,
            departments_env=departments.env,
            opa_url=f"http://127.0.0.1:{port}",
        ) as gw:
            client = gw.client("welfare-office")
            query = {"kind": "record", "subject": subject_with("civil")}
            request = {
                "agreement": "welfare-person-lookup",
                "dataset": "person",
                "purpose": "benefit-eligibility",
                "query": query,
            }
            assert client.exchange(**request).records
            opa.terminate()
            opa.wait(timeout=10)
            with pytest.raises(Unavailable) as err:
                client.exchange(**request)
            assert err.value.code == "policy_error"
            assert "records" not in err.value.problem
            ready = httpx.get(gw.url + "/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["policy_engine"] != "ok"
            metrics = httpx.get(gw.url + "/metrics").text
            assert 'accord_denials_total{reason="policy_error"}' in metrics
    finally:
        if opa.poll() is None:
            opa.kill()
