"""``accord serve --workers 2``: two processes share the port (SO_REUSEPORT), one
store, one jti cache and one audit chain; the parent stops them together."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from examples.launch import Departments
from gateway.auth.requests import sign_request_token
from gateway.client import AccordClient
from tests._support.gateway import Gateway, running_gateway
from tests._support.servers import fresh_database
from tests.exchange.conftest import subject_with

PERSON = {
    "agreement": "welfare-person-lookup",
    "dataset": "person",
    "purpose": "benefit-eligibility",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def two_workers(
    request: pytest.FixtureRequest, departments: Departments, tmp_path: Path
) -> Iterator[Gateway]:
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path / 'accord.db'}"
    else:
        db_url = fresh_database(request.getfixturevalue("pg_server_url"))
    with running_gateway(
        db_url=db_url, data_dir=tmp_path, departments_env=departments.env, workers=2
    ) as gw:
        yield gw


def _workers(parent: int) -> list[int]:
    """The worker processes (not multiprocessing's resource tracker)."""
    children = [int(c) for c in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_exchanges_spread_over_workers_share_one_chain_and_one_jti_cache(
    two_workers: Gateway,
) -> None:
    gw = two_workers
    assert len(_workers(gw.process.pid)) == 2
    # Sixteen clients, sixteen keep-alive connections: the kernel hashes them over
    # both workers. Every exchange answers, and all land in one gapless chain.
    clients = [gw.client("welfare-office") for _ in range(16)]
    subject = subject_with("civil")

    def one(c: AccordClient) -> int:
        return int(
            c.exchange(**PERSON, query={"kind": "record", "subject": subject}).body["audit"]["seq"]
        )

    with ThreadPoolExecutor(8) as pool:
        seqs = list(pool.map(one, clients * 3))
    assert len(set(seqs)) == len(seqs) == 48
    # A token is single use whichever worker sees it second.
    body = json.dumps({**PERSON, "query": {"kind": "record", "subject": subject}}).encode()
    token = sign_request_token(
        gw.key("welfare-office"),
        department="welfare-office",
        system=clients[0].system,
        audience=clients[0].audience,
        method="POST",
        path="/v1/exchanges",
        body=body,
    )
    answers = [
        httpx.post(
            gw.url + "/v1/exchanges",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        for _ in range(4)  # new connection each time: lands on either worker
    ]
    assert [a.status_code for a in answers].count(200) == 1
    assert {a.json()["code"] for a in answers if a.status_code != 200} == {"token_replayed"}
    out = gw.audit_cli("verify")
    assert out.returncode == 0, out.stdout + out.stderr


def test_sigterm_stops_every_worker_and_the_parent_cleanly(two_workers: Gateway) -> None:
    workers = _workers(two_workers.process.pid)
    two_workers.process.send_signal(signal.SIGTERM)
    assert two_workers.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)


def test_a_dead_worker_stops_the_set_with_a_failure(two_workers: Gateway) -> None:
    workers = _workers(two_workers.process.pid)
    os.kill(workers[0], signal.SIGKILL)
    assert two_workers.process.wait(timeout=30) != 0  # a supervisor restarts the set
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)
