"""REST and SOAP connectors over mutual TLS against a real TLS server on 127.0.0.1.

The server (``hostile_server`` with ``--certfile``/``--client-ca``) demands a
client certificate from our private CA; certificates are minted per session
with ``cryptography``. A missing or foreign client cert, or a server we do not
trust, is a connector error; bad TLS files are refused when the connector is
built, not on the first exchange.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.config import build_connector
from connectors.interface import ConnectorConfigError, ConnectorError
from examples.launch import ROOT
from tests._support.servers import free_port
from tests.connectors.tls_certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_url(pki: Pki) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.connectors.hostile_server",
            "--port",
            str(port),
            "--certfile",
            str(pki.server_cert),
            "--keyfile",
            str(pki.server_key),
            "--client-ca",
            str(pki.ca),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    url = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                httpx.get(url + "/healthz", verify=ctx, timeout=1.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def config(url: str, tls: Any) -> dict[str, Any]:
    return {
        "kind": "rest",
        "name": "tls_registry",
        "base_url": url,
        "tls": tls,
        "timeouts": {"connect": 2.0, "read": 2.0, "total": 5.0},
        "retries": {"attempts": 2, "backoff": 0.01},
        "entities": {"good": {"key": "ssn", "path": "/rest/good/{key}", "fields": ["ssn", "name"]}},
    }


async def fetch_code(cfg: dict[str, Any]) -> str:
    conn = build_connector(cfg)
    try:
        with pytest.raises(ConnectorError) as err:
            await conn.fetch("good", "12345678901", ["ssn"])
    finally:
        await conn.aclose()
    return err.value.code


async def test_client_certificate_from_our_ca_is_accepted(tls_url: str, pki: Pki) -> None:
    cfg = config(
        tls_url,
        {
            "ca_file": str(pki.ca),
            "client_cert": str(pki.client_cert),
            "client_key": str(pki.client_key),
        },
    )
    conn = build_connector(cfg)
    try:
        result = await conn.fetch("good", "12345678901", ["ssn", "name"])
        health = await conn.check()
    finally:
        await conn.aclose()
    assert result.record["ssn"] == "12345678901"
    assert health.detail == "ok"


async def test_missing_client_certificate_is_refused_by_the_provider(
    tls_url: str, pki: Pki
) -> None:
    # The server drops the handshake; httpx cannot tell that from a disconnect.
    assert await fetch_code(config(tls_url, {"ca_file": str(pki.ca)})) == "connector_unavailable"


async def test_client_certificate_from_a_foreign_ca_is_refused(tls_url: str, pki: Pki) -> None:
    tls = {
        "ca_file": str(pki.ca),
        "client_cert": str(pki.rogue_client_cert),
        "client_key": str(pki.rogue_client_key),
    }
    assert await fetch_code(config(tls_url, tls)) == "connector_unavailable"


async def test_untrusted_server_certificate_is_refused(tls_url: str, pki: Pki) -> None:
    # No ca_file: the system trust store does not know our private CA.
    tls = {"client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
    assert await fetch_code(config(tls_url, tls)) == "connector_tls_failed"


@pytest.mark.parametrize(
    "tls",
    [
        {"ca_file": "/nonexistent/ca.pem"},
        {"client_cert": "/nonexistent/client.pem"},
        {"client_key": "client.key"},
        {"verify": False},
        "yes",
    ],
)
def test_bad_tls_settings_are_refused_at_build_time(tls: Any, pki: Pki) -> None:
    with pytest.raises(ConnectorConfigError) as err:
        build_connector(config("https://127.0.0.1:9", tls))
    assert err.value.code == "connector_config_invalid"


def test_mismatched_key_is_refused_at_build_time(pki: Pki) -> None:
    tls = {"client_cert": str(pki.client_cert), "client_key": str(pki.rogue_client_key)}
    with pytest.raises(ConnectorConfigError):
        build_connector(config("https://127.0.0.1:9", tls))


def test_tls_on_plain_http_is_refused(pki: Pki) -> None:
    tls = {"client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
    with pytest.raises(ConnectorConfigError):
        build_connector(config("http://127.0.0.1:9", tls))


def test_certificate_files_are_not_leaked_in_errors(pki: Path | Pki) -> None:
    with pytest.raises(ConnectorConfigError) as err:
        build_connector(config("https://127.0.0.1:9", {"client_cert": "/etc/passwd"}))
    assert "root:" not in err.value.detail


async def test_soap_over_mutual_tls(tls_url: str, pki: Pki) -> None:
    from tests.connectors.conftest import WSDL

    tls = {
        "ca_file": str(pki.ca),
        "client_cert": str(pki.client_cert),
        "client_key": str(pki.client_key),
    }
    cfg = {
        "kind": "soap",
        "name": "tls_tax",
        "wsdl": str(WSDL),
        "address": f"{tls_url}/soap/good",
        "tls": tls,
        "entities": {
            "tax_status": {
                "operation": "GetTaxStatus",
                "key": "TaxpayerId",
                "fields": ["TaxpayerId", "FilingStatus"],
            }
        },
    }
    conn = build_connector(cfg)
    try:
        result = await conn.fetch("tax_status", "12345678901", ["TaxpayerId", "FilingStatus"])
    finally:
        await conn.aclose()
    assert result.record == {"TaxpayerId": "12345678901", "FilingStatus": "S"}
    untrusted = dict(cfg, tls={k: v for k, v in tls.items() if k != "ca_file"})
    conn = build_connector(untrusted)
    try:
        with pytest.raises(ConnectorError) as err:
            await conn.fetch("tax_status", "12345678901", ["TaxpayerId"])
    finally:
        await conn.aclose()
    assert err.value.code == "connector_tls_failed"
