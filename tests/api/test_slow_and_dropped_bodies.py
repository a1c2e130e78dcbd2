"""Slowloris bodies get 408 and a closed connection; dropped bodies end quietly.

Over HTTP against a running gateway whose body deadline is one second
(``ACCORD_BODY_TIMEOUT_S``), so every wait here is bounded by a few seconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.auth.humans import dev_issuer_key, issue_dev_token
from tests._support.gateway import Gateway, sqlite_gateway

BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-slow-bodies")
    with sqlite_gateway(data, extra_env={"ACCORD_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}) as gateway:
        yield gateway


def _connect(gw: Gateway) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _head(path: str, length: int, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes (the socket timeout bounds it)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _admin_header(gw: Gateway) -> str:
    key = dev_issuer_key(gw.data_dir / "keys")
    token = issue_dev_token(key, subject="tester", roles=["admin"], audience="accord")
    return f"Authorization: Bearer {token}"


def _log(gw: Gateway) -> str:
    port = gw.url.rsplit(":", 1)[1]
    return Path(gw.data_dir / f"gateway-{port}.log").read_text()


def test_slowloris_body_on_the_exchange_route_gets_408_and_a_closed_connection(
    gw: Gateway,
) -> None:
    with _connect(gw) as sock:
        sock.sendall(_head("/v1/exchanges", 100_000, "Authorization: Bearer x.y.z") + b" ")
        answer = _read_until_closed(sock)  # returns only once the gateway closes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"application/problem+json" in head and b"connection: close" in head.lower()
    doc = httpx.Response(408, content=body).json()
    assert doc["code"] == "body_timeout" and doc["type"] == "urn:accord:problem:body_timeout"
    assert len(doc["exchange_id"]) == 32  # as every answer of the exchange route
    assert f"x-exchange-id: {doc['exchange_id']}".encode() in head.lower()


def test_body_trickled_past_the_deadline_gets_408(gw: Gateway) -> None:
    """The deadline is for the whole body, not for each byte: a byte every 0.3 s
    keeps arriving, and is still cut off."""
    with _connect(gw) as sock:
        sock.sendall(_head("/v1/agreements/drafts", 1000, _admin_header(gw)))
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.3)
        while time.monotonic() - started < 10 * BODY_TIMEOUT_S:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"body_timeout" in answer and b"exchange_id" not in answer


def test_a_slow_body_within_the_deadline_is_served(gw: Gateway) -> None:
    def chunks() -> Iterator[bytes]:
        for part in (b'{"not": ', b'"an agreement"}'):
            time.sleep(BODY_TIMEOUT_S / 4)
            yield part

    r = httpx.post(
        gw.url + "/v1/agreements/drafts",
        content=chunks(),
        headers={"Authorization": _admin_header(gw).split(": ", 1)[1]},
    )
    assert r.status_code == 422, r.text  # read whole, parsed, and validated


@pytest.mark.parametrize("path", ["/v1/exchanges", "/v1/agreements/drafts"])
def test_client_disconnecting_mid_body_raises_no_incident(gw: Gateway, path: str) -> None:
    extra = "Authorization: Bearer x.y.z" if path == "/v1/exchanges" else _admin_header(gw)
    for _ in range(3):
        with _connect(gw) as sock:
            sock.sendall(_head(path, 1000, extra) + b'{"a":')
            time.sleep(0.1)
    time.sleep(0.5)  # bounded: let the gateway notice the disconnects
    assert httpx.get(gw.url + "/livez").status_code == 200
    log = _log(gw)
    assert "unhandled_error" not in log
    assert "Traceback" not in log and "ClientDisconnect" not in log
