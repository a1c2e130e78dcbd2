"""Witnesses over real HTTP on 127.0.0.1: cosign extensions, refuse forks and bad proofs."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog, NoteSigner
from audit import witness_client as wc
from audit.witness import Witness, make_server
from tests.audit.conftest import ORIGIN, LogFactory, entry, log_signer, witness_cosigner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def witness_url(tmp_path: Path) -> Iterator[str]:
    w = Witness(witness_cosigner(), [log_signer().verifier()], tmp_path / "witness.db")
    server = make_server(w)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    wc._last_sent.clear()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _log(make_log: LogFactory, url: str) -> AuditLog:
    return make_log(url, witnesses=[witness_cosigner().verifier()])


def _grow(log: AuditLog, n: int, start: int = 0) -> str:
    for i in range(start, start + n):
        log.append(entry(i))
    return log.checkpoint()


def _post(url: str, old: int, proof: list[bytes], note: str) -> httpx.Response:
    head = "\n".join([f"old {old}", *(base64.b64encode(h).decode() for h in proof)])
    return httpx.post(url + "/add-checkpoint", content=(head + "\n\n" + note).encode())


def test_witness_cosigns_extensions_and_the_log_records_it(
    sqlite_url: str, make_log: LogFactory, witness_url: str
) -> None:
    log = _log(make_log, sqlite_url)
    _grow(log, 10)
    assert log.send_to_witnesses([witness_url]) == {witness_url: "cosigned by witness.test/w1"}
    note = log.latest_checkpoint()
    assert note is not None and note.count("\u2014 witness.test/w1 ") == 1
    _grow(log, 13, start=10)  # 10 -> 23 needs a consistency proof the witness checks
    assert log.send_to_witnesses([witness_url])[witness_url].startswith("cosigned")
    assert httpx.get(witness_url + f"/checkpoint?origin={ORIGIN}").text.split("\n")[1] == "23"
    report = log.verify()
    assert report.ok and report.cosigned == {"witness.test/w1": 23}, report.to_json()


def test_a_log_that_forgot_what_it_sent_catches_up_from_the_409(
    sqlite_url: str, make_log: LogFactory, witness_url: str
) -> None:
    log = _log(make_log, sqlite_url)
    _grow(log, 6)
    log.send_to_witnesses([witness_url])
    _grow(log, 5, start=6)
    wc._last_sent.clear()  # a restarted node starts from 0; the witness tells it 6
    assert log.send_to_witnesses([witness_url])[witness_url].startswith("cosigned")


def test_witness_refuses_a_fork(
    tmp_path: Path, sqlite_url: str, make_log: LogFactory, witness_url: str
) -> None:
    log = _log(make_log, sqlite_url)
    _grow(log, 20)
    log.send_to_witnesses([witness_url])
    # same key and origin, different history: what an operator showing two views makes
    fork = _log(make_log, f"sqlite:///{tmp_path / 'fork.db'}")
    _grow(fork, 25, start=100)
    result = fork.send_to_witnesses([witness_url])[witness_url]
    assert result.startswith("refused: HTTP 422"), result
    same_size = _log(make_log, f"sqlite:///{tmp_path / 'fork2.db'}")
    note = _grow(same_size, 20, start=200)
    r = _post(witness_url, 20, [], note)
    assert r.status_code == 409 and "forked" in r.text
    smaller = _log(make_log, f"sqlite:///{tmp_path / 'fork3.db'}")
    _grow(smaller, 15, start=300)
    wc._last_sent.clear()
    assert smaller.send_to_witnesses([witness_url])[witness_url].startswith("refused")
    for forked in (fork, same_size, smaller):
        assert "witness.test" not in (forked.latest_checkpoint() or "")
    # the witness still holds the honest checkpoint
    assert httpx.get(witness_url + f"/checkpoint?origin={ORIGIN}").text.split("\n")[1] == "20"


def test_witness_protocol_errors(sqlite_url: str, make_log: LogFactory, witness_url: str) -> None:
    log = _log(make_log, sqlite_url)
    note1 = _grow(log, 4)
    assert _post(witness_url, 0, [], note1).status_code == 200
    note2 = _grow(log, 4, start=4)
    good = log.consistency_proof(4, 8).hashes
    assert _post(witness_url, 0, [], note2).text == "4\n"  # stale old size: 409 with ours
    assert _post(witness_url, 4, [b"\x00" * 32, *good[1:]], note2).status_code == 422
    assert _post(witness_url, 4, list(good[:-1]), note2).status_code == 422
    assert _post(witness_url, 9, [], note2).status_code == 400
    stranger = NoteSigner("stranger.example/log", Ed25519PrivateKey.generate())
    assert (
        _post(
            witness_url, 0, [], stranger.sign_note("stranger.example/log\n1\n" + "A" * 43 + "=\n")
        ).status_code
        == 404
    )
    impostor = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    text = note2.split("\n\n")[0] + "\n"
    assert _post(witness_url, 4, list(good), impostor.sign_note(text)).status_code == 403
    for body in (b"", b"old 4\n", b"old x\n\nnote\n", b"\xff\xfe", b"old 04\n\n" + note2.encode()):
        assert httpx.post(witness_url + "/add-checkpoint", content=body).status_code == 400
    huge = httpx.post(witness_url + "/add-checkpoint", content=b"x" * 70_000)
    assert huge.status_code == 400
    assert httpx.get(witness_url + "/nope").status_code == 404
    assert _post(witness_url, 4, list(good), note2).status_code == 200


def test_witness_remembers_across_restarts(
    tmp_path: Path, sqlite_url: str, make_log: LogFactory
) -> None:
    state = tmp_path / "w.db"
    log = _log(make_log, sqlite_url)
    note = _grow(log, 7)
    for _ in range(2):
        w = Witness(witness_cosigner(), [log_signer().verifier()], state)
        r = w.add_checkpoint(f"old {7 if w.latest(ORIGIN) else 0}\n\n{note}".encode())
        assert r.status == 200
    fork = _log(make_log, f"sqlite:///{tmp_path / 'fork.db'}")
    forked = _grow(fork, 7, start=50)
    w = Witness(witness_cosigner(), [log_signer().verifier()], state)
    assert w.add_checkpoint(f"old 7\n\n{forked}".encode()).status == 409


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_accord_audit_witness_command_serves_cosignatures(
    tmp_path: Path, sqlite_url: str, make_log: LogFactory
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "w.pem").write_bytes(pem)
    port = _free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "audit.cli", "witness", "--key", str(tmp_path / "w.pem")),
            *("--name", "witness.test/w1", "--log-vkey", log_signer().verifier().vkey()),
            *("--state", str(tmp_path / "state.db"), "--port", str(port)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                vkey = httpx.get(url + "/vkey").text.strip()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert vkey == witness_cosigner().verifier().vkey()
        log = _log(make_log, sqlite_url)
        _grow(log, 3)
        assert log.send_to_witnesses([url])[url].startswith("cosigned")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cadence_checkpoints_are_sent_to_configured_witnesses(
    sqlite_url: str, make_log: LogFactory, witness_url: str
) -> None:
    log = make_log(
        sqlite_url,
        witnesses=[witness_cosigner().verifier()],
        witness_urls=[witness_url],
        checkpoint_every=5,
    )
    for i in range(5):
        log.append(entry(i))
    deadline = time.monotonic() + 30
    while "witness.test/w1" not in (log.latest_checkpoint() or ""):
        assert time.monotonic() < deadline, "the witness never cosigned"
        time.sleep(0.05)
    assert (log.latest_checkpoint() or "").split("\n")[1] == "5"


def test_a_checkpoint_signed_while_witnesses_are_asked_is_sent_after(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    w = Witness(witness_cosigner(), [log_signer().verifier()], tmp_path / "slow-witness.db")
    asked: list[int] = []
    first_round = threading.Event()
    real = w.add_checkpoint

    def slow_first(body: bytes, now: int | None = None) -> Any:
        asked.append(len(asked))
        if len(asked) == 1:
            first_round.wait(20)  # the first round is still out ...
        return real(body, now)

    w.add_checkpoint = slow_first  # type: ignore[method-assign]
    server = make_server(w)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    wc._last_sent.clear()
    try:
        log = make_log(
            sqlite_url,
            witnesses=[witness_cosigner().verifier()],
            witness_urls=[f"http://127.0.0.1:{server.server_port}"],
            checkpoint_every=2,
        )
        for i in range(2):
            log.append(entry(i))
        deadline = time.monotonic() + 20
        while not asked and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(2, 4):  # ... when the next checkpoint is signed
            log.append(entry(i))
        while (log.latest_checkpoint() or "\n").split("\n")[1] != "4":
            assert time.monotonic() < deadline, "the second checkpoint was never signed"
            time.sleep(0.01)
        first_round.set()
        while "witness.test/w1" not in (log.latest_checkpoint() or ""):
            assert time.monotonic() < deadline, "the newest checkpoint never reached the witness"
            time.sleep(0.05)
        assert w.latest(ORIGIN) is not None and "\n4\n" in (w.latest(ORIGIN) or "")
    finally:
        server.shutdown()
        server.server_close()
