"""The gateway runs each node's background watch on its audit log (``audit_watch``) for
as long as it serves: damage written into the database under a running gateway
stops it by itself, without anyone asking for the log's status."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.auditing import audit_event
from gateway.services import build_services
from gateway.settings import Settings


def _ready(client: TestClient) -> httpx.Response:
    response: httpx.Response = client.get("/readyz")
    return response


def test_a_running_gateway_stops_by_itself_when_the_head_is_rewritten_under_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    services = build_services(
        Settings(
            dev_mode=True,
            database_url=sqlite_url,
            data_dir=tmp_path,
            audit_verify_interval_s=0.05,  # ACCORD_AUDIT_VERIFY_INTERVAL_S in a deployment
        )
    )
    try:
        with TestClient(create_app(services=services)) as client:
            watch = services._audit_watch
            assert watch is not None
            thread = watch._thread
            assert thread is not None and thread.is_alive()
            services.audit_log.append(audit_event("agreement_change", actor="t", outcome="ok"))
            assert _ready(client).status_code == 200
            with services.engine.begin() as conn:  # as an operator could, in the database
                conn.execute(sa.text("UPDATE audit_head SET chain_hash = :c"), {"c": bytes(32)})
            deadline = time.monotonic() + 30
            while _ready(client).status_code != 503:
                assert time.monotonic() < deadline, "the gateway never stopped"
                time.sleep(0.05)
            check = _ready(client).json()["checks"]["audit_log"]
            assert check.startswith("error: audit_log_damaged"), check
            assert "head_mismatch" in check
        assert not thread.is_alive()  # it stops with the gateway
        assert services._audit_watch is None
    finally:
        services.close()
