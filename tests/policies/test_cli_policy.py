"""``accord policy`` against a real gateway (uvicorn on loopback) with officers' tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.cli.main import app as cli
from gateway.services import Services, build_services
from tests._support.gateway import serving_in_thread
from tests.policies.test_api_policy import gateway_settings
from tests.policies.workflow_support import SUSPEND_RULE, SUSPEND_TEST, shipped_sources

pytestmark = pytest.mark.opa


@pytest.fixture
def gateway(sqlite_url: str, tmp_path: Path, opa_bin: Path) -> Iterator[tuple[str, Services]]:
    services = build_services(gateway_settings(sqlite_url, tmp_path, opa_bin))
    try:
        with serving_in_thread(services) as url:
            yield url, services
    finally:
        services.close()


def token(services: Services, sub: str, role: str = "officer") -> str:
    key = dev_issuer_key(services.settings.resolved_key_dir)
    return issue_dev_token(key, subject=sub, roles=[role], audience="accord")


def test_officers_run_the_workflow_from_the_cli(
    gateway: tuple[str, Services], tmp_path: Path
) -> None:
    url, services = gateway
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    for path, text in shipped_sources().items():
        (bundle_dir / path).write_text(text, encoding="utf-8")
    (bundle_dir / "suspend.rego").write_text(SUSPEND_RULE, encoding="utf-8")
    (bundle_dir / "suspend_test.rego").write_text(SUSPEND_TEST, encoding="utf-8")
    runner = CliRunner()
    alice = {"ACCORD_URL": url, "ACCORD_TOKEN": token(services, "alice"), "COLUMNS": "200"}
    bob = alice | {"ACCORD_TOKEN": token(services, "bob")}

    r = runner.invoke(cli, ["policy", "propose", str(bundle_dir), "--note", "agr-2"], env=alice)
    assert r.exit_code == 0, r.output
    assert "checked" in r.output and "rego_tests" in r.output
    version = next(v.version for v in services.policy.list() if v.status == "checked")
    short = version.removeprefix("sha256:")[:12]

    r = runner.invoke(cli, ["policy", "approve", short], env=alice)
    assert r.exit_code == 1 and "four_eyes_required" in r.output

    r = runner.invoke(cli, ["policy", "impact", short, "--days", "7"], env=bob)
    assert r.exit_code == 0 and "0 of 0 decisions" in r.output, r.output
    for step in ("approve", "activate"):
        r = runner.invoke(cli, ["policy", step, short], env=bob)
        assert r.exit_code == 0, r.output
    assert services.policy.active_version() == version

    r = runner.invoke(cli, ["policy", "list"], env=alice)
    assert r.exit_code == 0 and "active" in r.output and "retired" in r.output
    r = runner.invoke(cli, ["policy", "show", short, "--sources"], env=alice)
    assert r.exit_code == 0 and "suspend.rego" in r.output and "user:bob" in r.output
    r = runner.invoke(cli, ["policy", "rollback"], env=alice)
    assert r.exit_code == 0 and "rolled back" in r.output
    assert services.policy.active_version() != version
    r = runner.invoke(cli, ["policy", "history"], env=alice)
    assert r.exit_code == 0 and "rollback" in r.output and "bootstrap" in r.output


def test_cli_reports_rejections_and_needs_a_token(
    gateway: tuple[str, Services], tmp_path: Path
) -> None:
    url, services = gateway
    bad = tmp_path / "bad"
    bad.mkdir()
    for path, text in shipped_sources().items():
        (bad / path).write_text(text, encoding="utf-8")
    (bad / "net.rego").write_text(
        'package accord.exchange\n\nx := http.send({"method": "get", "url": "u"})\n',
        encoding="utf-8",
    )
    runner = CliRunner()
    env = {"ACCORD_URL": url, "ACCORD_TOKEN": token(services, "alice"), "COLUMNS": "200"}
    r = runner.invoke(cli, ["policy", "propose", str(bad)], env=env)
    assert r.exit_code == 1
    assert "policy_rejected" in r.output and "net.rego:3" in r.output and "builtins" in r.output
    r = runner.invoke(cli, ["policy", "list"], env=env | {"ACCORD_TOKEN": ""})
    assert r.exit_code == 2 and "no token" in r.output
    auditor = env | {"ACCORD_TOKEN": token(services, "carol", "auditor")}
    r = runner.invoke(cli, ["policy", "rollback"], env=auditor)
    assert r.exit_code == 1 and "role_required" in r.output
    assert len(services.policy.list()) == 2  # the shipped bundle and the rejected one
