"""The embedded default writes on its event loop, but never waits there for SQLite's
write turn: while another process holds it, exchanges wait (trying again) and the
gateway keeps answering everything else."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import Any

import httpx

from tests._support.gateway import Gateway
from tests.exchange.conftest import subject_with

REQUEST = {
    "agreement": "welfare-person-lookup",
    "dataset": "person",
    "purpose": "benefit-eligibility",
}


def test_a_write_turn_held_by_another_process_does_not_stall_the_gateway(
    embedded_gateway: Gateway,
) -> None:
    gw = embedded_gateway
    client = gw.client("welfare-office")
    query = {"kind": "record", "subject": subject_with("civil")}
    assert client.exchange(**REQUEST, query=query).records
    # What an `accord` command writing to the same database holds meanwhile.
    fd = os.open(f"{gw.data_dir / 'accord.db'}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    got: dict[str, Any] = {}

    def exchange() -> None:
        try:
            got["answer"] = client.exchange(**REQUEST, query=query)
        except Exception as exc:  # reported by the assertion below
            got["error"] = exc

    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t = threading.Thread(target=exchange)
        t.start()
        time.sleep(0.5)
        waiting = t.is_alive()  # it needs the turn for its jti claim
        live = httpx.get(gw.url + "/livez", timeout=5)  # the loop answers meanwhile
        metrics = httpx.get(gw.url + "/metrics", timeout=5)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    t.join(30)
    assert waiting
    assert live.status_code == 200 and metrics.status_code == 200
    assert "error" not in got, got
    assert got["answer"].records
    assert gw.audit_cli("verify").returncode == 0
