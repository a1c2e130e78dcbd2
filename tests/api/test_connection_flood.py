"""A flood of open connections meets the per-process cap (``ACCORD_MAX_CONNECTIONS``).

Beyond the cap the server answers 503 itself, without running the app: an
exchange is not decided, fetched, released or audited. Over HTTP against a
running gateway with a cap of four.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.auth.humans import dev_issuer_key, issue_dev_token
from tests._support.gateway import Gateway, sqlite_gateway

CAP = 4


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-connections")
    with sqlite_gateway(data, extra_env={"ACCORD_MAX_CONNECTIONS": str(CAP)}) as gateway:
        yield gateway


@contextlib.contextmanager
def _idle_connections(gw: Gateway, count: int) -> Iterator[None]:
    host, port = gw.url.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(count)]
    try:
        time.sleep(0.3)  # bounded: let the server accept them
        yield
    finally:
        for s in socks:
            s.close()


def _audit_size(gw: Gateway) -> int:
    key = dev_issuer_key(gw.data_dir / "keys")
    token = issue_dev_token(key, subject="tester", roles=["auditor"], audience="accord")
    r = httpx.get(
        f"{gw.url}/v1/audit/entries",
        params={"start": 0, "end": 1},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    size: int = r.json()["size"]
    return size


def _served_again(gw: Gateway) -> None:
    for _ in range(100):  # bounded: up to 5 s for the server to see the sockets close
        if httpx.get(gw.url + "/livez").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the gateway did not serve again after the flood ended")


def test_connection_flood_beyond_the_cap_gets_503_and_runs_nothing(gw: Gateway) -> None:
    before = _audit_size(gw)
    with _idle_connections(gw, CAP):
        assert httpx.get(gw.url + "/livez").status_code == 503
        exchange = httpx.post(
            gw.url + "/v1/exchanges",
            content=b"{}",
            headers={"Content-Type": "application/json", "Authorization": "Bearer x.y.z"},
        )
        assert exchange.status_code == 503
        assert "exchange_id" not in exchange.text  # the app never saw it
    _served_again(gw)
    # A bad token the app saw would have left an auth_failure entry.
    assert _audit_size(gw) == before


def test_below_the_cap_everything_is_served(gw: Gateway) -> None:
    _served_again(gw)
    with _idle_connections(gw, CAP - 2):
        assert httpx.get(gw.url + "/livez").status_code == 200
