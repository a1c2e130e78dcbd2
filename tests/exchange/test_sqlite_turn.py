"""The embedded default writes on its event loop, but never waits there for SQLite's
write turn: while another process holds it, exchanges wait (trying again) and the
gateway keeps answering everything else."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from typing import Any

import httpx
import pytest

from gateway.client import Unavailable
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


def test_a_writer_that_ignores_the_turn_fails_exchanges_closed_and_stalls_nothing(
    embedded_gateway: Gateway,
) -> None:
    """Someone holds SQLite's own write lock without Accord's turn (a `sqlite3` shell
    in a transaction): the loop waits for it only briefly, so exchanges fail closed
    with 503 and nothing else the gateway serves stalls; afterwards all is well."""
    gw = embedded_gateway
    client = gw.client("welfare-office")
    query = {"kind": "record", "subject": subject_with("civil")}
    foreign = sqlite3.connect(gw.data_dir / "accord.db", isolation_level=None, timeout=30)
    try:
        foreign.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(Unavailable) as err:
            client.exchange(**REQUEST, query=query)
        refused_after = time.monotonic() - started
        live = httpx.get(gw.url + "/livez", timeout=5)
    finally:
        foreign.execute("ROLLBACK")
        foreign.close()
    assert err.value.code in ("store_unavailable", "audit_unavailable")
    assert "records" not in err.value.problem
    assert refused_after < 10  # not SQLite's 30 s busy timeout
    assert live.status_code == 200
    assert client.exchange(**REQUEST, query=query).records
    assert gw.audit_cli("verify").returncode == 0
