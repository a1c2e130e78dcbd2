"""Auditor API over HTTP: roles, checkpoints, entries, proofs, status, problem+json."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from audit import AuditUnavailable, ConsistencyProof, InclusionProof, NoteSigner
from audit.checkpoint import verify_checkpoint
from gateway.api.app import create_app
from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.services import Services
from tests.gateway.conftest import Clock, make_services


def _entry(i: int) -> dict[str, Any]:
    return {
        "event": "exchange",
        "exchange_id": f"ex-{i // 3}",
        "actor": "welfare-office/case-system",
        "decision": "allow",
        "outcome": "released",
        "subject": f"pseudonym-{i:08d}-abcdef",
    }


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Services]]:
    services = make_services(sqlite_url, tmp_path, Clock())
    with TestClient(create_app(services=services)) as client:
        yield client, services
    services.close()


def bearer(services: Services, *roles: str) -> dict[str, str]:
    key = dev_issuer_key(services.settings.resolved_key_dir)
    token = issue_dev_token(key, subject="ann", roles=roles, audience="accord")
    return {"Authorization": f"Bearer {token}"}


def problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["type"] == f"urn:accord:problem:{code}" and body["status"] == status
    return body


def _fill(services: Services, n: int = 12) -> int:
    """Append ``n`` entries; returns the seq of the first (the gateway logs its own start)."""
    base = services.audit_log.head().size
    for i in range(n):
        services.audit_log.append(_entry(i))
    return base


def _log_key(services: Services) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = services.log_key
    assert isinstance(key, Ed25519PrivateKey)
    return NoteSigner(services.settings.audit_origin, key).verifier()


def test_only_auditors_and_admins_may_read(env: tuple[TestClient, Services]) -> None:
    client, services = env
    b = _fill(services, 3)
    problem(client.get("/v1/audit/entries"), 401, "missing_token")
    for role in ("officer", "department"):
        problem(
            client.get("/v1/audit/entries", headers=bearer(services, role)), 403, "role_required"
        )
    for role in ("auditor", "admin"):
        r = client.get("/v1/audit/entries", headers=bearer(services, role))
        assert r.status_code == 200 and len(r.json()["entries"]) == b + 3 + 3
    # The three refusals are in the log: who (if anyone verified), what, why.
    refused = [e["entry"] for e in r.json()["entries"][-3:]]
    assert [(e["event"], e["outcome"], e["problem"], e["status"]) for e in refused] == [
        ("auth_failure", "refused", "missing_token", 401),
        ("admin", "refused", "role_required", 403),
        ("admin", "refused", "role_required", 403),
    ]
    assert refused[0]["actor"] == "anonymous"
    assert all(e["actor"].startswith("user:") for e in refused[1:])
    assert {e["detail"]["route"] for e in refused} == {"/v1/audit/entries"}
    assert client.post("/v1/audit/entries", headers=bearer(services, "auditor")).status_code == 405


def test_a_refused_path_writes_no_caller_text_into_the_log(
    env: tuple[TestClient, Services],
) -> None:
    """Anyone may fill a path with text; the permanent log keeps only the route's
    template, for a refusal in the route (403) and before the body is read (401)."""
    client, services = env
    hostile = "CALLER-TEXT%20pay%20to%20IBAN%20XX00"
    path = f"/v1/departments/{hostile}/suspend"
    problem(client.post(path, json={"reason": "x"}), 401, "missing_token")
    officer = bearer(services, "officer")
    problem(client.post(path, json={"reason": "x"}, headers=officer), 403, "role_required")
    r = client.get("/v1/audit/entries", headers=bearer(services, "auditor"))
    refused = [e["entry"] for e in r.json()["entries"] if e["entry"]["outcome"] == "refused"]
    assert [(e["event"], e["status"]) for e in refused] == [
        ("auth_failure", 401),
        ("admin", 403),
    ]
    assert {e["detail"]["route"] for e in refused} == {"/v1/departments/{dept_id}/suspend"}
    assert "CALLER-TEXT" not in r.text


def test_latest_checkpoint_is_a_signed_note(env: tuple[TestClient, Services]) -> None:
    client, services = env
    auditor = bearer(services, "auditor")
    problem(client.get("/v1/audit/checkpoint", headers=auditor), 404, "audit_no_checkpoint")
    _fill(services)
    services.audit_log.checkpoint()
    r = client.get("/v1/audit/checkpoint", headers=auditor)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    cp = verify_checkpoint(r.text, _log_key(services))
    assert cp.size == services.audit_log.head().size and cp.root == services.audit_log.head().root
    keys = client.get("/v1/audit/keys", headers=auditor).json()
    assert keys["log"] == _log_key(services).vkey() and keys["witnesses"] == []


def test_entries_by_range_and_by_exchange(env: tuple[TestClient, Services]) -> None:
    client, services = env
    b = _fill(services)
    auditor = bearer(services, "auditor")
    body = client.get(f"/v1/audit/entries?start={b + 2}&end={b + 5}", headers=auditor).json()
    assert [e["seq"] for e in body["entries"]] == [b + 2, b + 3, b + 4]
    assert body["size"] == b + 12 and body["entries"][0]["entry"]["exchange_id"] == "ex-0"
    got = client.get("/v1/audit/exchanges/ex-2/entries", headers=auditor).json()
    assert [e["seq"] for e in got["entries"]] == [b + 6, b + 7, b + 8]
    problem(client.get("/v1/audit/exchanges/nope/entries", headers=auditor), 404, "audit_not_found")
    problem(client.get("/v1/audit/entries?start=5&end=2", headers=auditor), 422, "audit_bad_range")
    problem(
        client.get("/v1/audit/entries?start=0&end=5000", headers=auditor),
        422,
        "audit_range_too_large",
    )
    problem(client.get("/v1/audit/entries?start=-1", headers=auditor), 422, "validation_failed")
    problem(client.get("/v1/audit/entries?start=abc", headers=auditor), 422, "validation_failed")


def test_inclusion_and_consistency_proofs_verify(env: tuple[TestClient, Services]) -> None:
    client, services = env
    b = _fill(services, 20)
    services.audit_log.checkpoint()
    auditor = bearer(services, "auditor")
    r = client.get("/v1/audit/proofs/inclusion/7", headers=auditor)
    proof = InclusionProof.from_json(r.json())
    proof.verify()
    assert proof.checkpoint is not None
    assert verify_checkpoint(proof.checkpoint, _log_key(services)).root == proof.root
    r = client.get("/v1/audit/proofs/inclusion/3?tree_size=5", headers=auditor)
    assert r.json()["tree_size"] == 5
    InclusionProof.from_json(r.json()).verify()
    r = client.get("/v1/audit/proofs/consistency?old=5&new=20", headers=auditor)
    ConsistencyProof.from_json(r.json()).verify()
    problem(
        client.get(f"/v1/audit/proofs/inclusion/{b + 20}", headers=auditor), 404, "audit_not_found"
    )
    beyond = problem(
        client.get("/v1/audit/proofs/inclusion/3?tree_size=99", headers=auditor),
        404,
        "audit_not_found",
    )
    assert "no tree of 99 entries" in beyond["detail"]  # the size is what is wrong
    problem(
        client.get("/v1/audit/proofs/consistency?old=9&new=4", headers=auditor),
        422,
        "audit_bad_range",  # as a reversed range of entries is
    )
    problem(
        client.get("/v1/audit/proofs/consistency?old=4&new=99", headers=auditor),
        404,
        "audit_not_found",
    )
    problem(
        client.get("/v1/audit/proofs/inclusion/99999999999999999999", headers=auditor),
        422,
        "validation_failed",
    )


def test_status_is_cached_and_reports_damage(
    env: tuple[TestClient, Services], sqlite_url: str
) -> None:
    client, services = env
    b = _fill(services)
    services.audit_log.checkpoint()
    auditor = bearer(services, "auditor")
    first = client.get("/v1/audit/status", headers=auditor).json()
    assert first["ok"] is True and first["size"] == b + 12 and first["report"]["damage"] is None
    assert first["report"]["checkpoints_verified"] == 1
    again = client.get("/v1/audit/status?refresh=true", headers=auditor).json()
    assert again["checked_at"] == first["checked_at"]  # refreshed too recently: cached
    db = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    db.execute("DROP TRIGGER audit_entries_no_update")
    db.execute(
        "UPDATE audit_entries SET data = CAST(replace(data, 'ex-1', 'ex-9') AS BLOB) WHERE seq = 4"
    )
    db.commit()
    db.close()
    services.extras["audit_status"].min_interval_s = 0
    bad = client.get("/v1/audit/status?refresh=true", headers=auditor).json()
    assert bad["ok"] is False
    assert (
        bad["report"]["damage"]["seq"] == 4 and bad["report"]["damage"]["kind"] == "entry_changed"
    )


def test_accord_audit_is_mounted_in_the_gateway_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    from gateway.cli.main import app

    monkeypatch.setenv("ACCORD_DEV_MODE", "true")
    monkeypatch.setenv("ACCORD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ACCORD_DATABASE_URL", sqlite_url)
    services = make_services(sqlite_url, tmp_path, Clock())
    _fill(services, 5)
    services.close()
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "checkpoint"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("accord.local/audit\n")  # signed with the gateway's log key
    r = runner.invoke(app, ["audit", "verify"])
    assert r.exit_code == 0 and "1 checkpoint(s) match" in r.output, r.output


def test_a_failed_audit_sync_stops_appends_and_readiness(
    env: tuple[TestClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, services = env
    assert client.get("/readyz").status_code == 200
    services.audit_log.append(_entry(0))

    def failing(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr("os.fdatasync", failing)
    with pytest.raises(AuditUnavailable, match="could not be synced"):
        services.audit_log.append(_entry(1))
    monkeypatch.undo()
    with pytest.raises(AuditUnavailable, match="until the gateway restarts"):
        services.audit_log.append(_entry(2))
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert "audit_log" in ready.text
