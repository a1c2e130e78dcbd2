"""A fault of the gateway itself, after authentication, is a failed exchange: audited
under the id its 500 answer carries, nothing released, and the connection kept.

The gateway is served from this process so the test can plant a bug in its flow
(there is no real provider answer left that reaches one: see
``test_hostile_providers.py``); it fetches from the sample civil registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.launch import Departments
from gateway.exchange.release_step import released_result
from gateway.jose import load_private_key_pem
from gateway.services import Services
from tests._support.gateway import exchange_entry, seeded_services, serving_in_thread
from tests.exchange.attack_support import (
    PATH,
    expect_problem,
    request_body,
    sign_token,
    token_claims,
)


@pytest.fixture
def in_process(
    departments: Departments, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Services]]:
    """A gateway served from this process, so a test can plant a bug in its flow."""
    for name, value in departments.env.items():
        monkeypatch.setenv(name, value)
    services = seeded_services(f"sqlite:///{tmp_path / 'accord.db'}", tmp_path)
    try:
        with serving_in_thread(services) as url:
            yield url, services
    finally:
        services.close()
        services.engine.dispose()


def test_unexpected_error_after_the_fetch_is_audited_and_answered(
    in_process: tuple[str, Services], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a 500 with no entry and a dropped connection: a failed exchange, audited
    under the id the answer carries, and the keep-alive connection still serves."""
    url, services = in_process

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug between fetch and answer")

    monkeypatch.setattr("gateway.exchange.service.released_result", bug)
    key = load_private_key_pem(tmp_path / "demo-keys" / "welfare-office.pem")
    with httpx.Client(base_url=url, timeout=30) as client:
        body = request_body(fields=["given_name"])
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {sign_token(key, token_claims(body))}",
        }
        doc = expect_problem(
            client.post(PATH, content=body, headers=headers), 500, "internal_error"
        )
        entry = exchange_entry(services.settings.database_url, doc["exchange_id"])
        assert (entry["event"], entry["outcome"], entry["status"]) == ("exchange", "failed", 500)
        assert entry["problem"] == "internal_error" and "subject" in entry
        monkeypatch.setattr("gateway.exchange.service.released_result", released_result)
        body = request_body(fields=["given_name"])
        headers["Authorization"] = f"Bearer {sign_token(key, token_claims(body))}"
        assert client.post(PATH, content=body, headers=headers).status_code == 200
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "audit.cli",
            "verify",
            "--log-key",
            str(tmp_path / "keys" / "log.pem"),
        ],
        cwd=tmp_path,
        env={**os.environ, "ACCORD_DATABASE_URL": services.settings.database_url},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
