"""C2SP signed notes, checkpoints and cosignatures against the published examples."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import (
    Checkpoint,
    Cosigner,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
    verify_cosignatures,
)
from audit.errors import SignatureInvalid
from audit.note import (
    EM_DASH,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_note,
)

V = json.loads((Path(__file__).parent / "vectors" / "signed_note.json").read_text())
EXAMPLES: list[dict[str, Any]] = V["examples"]
CP: dict[str, Any] = V["checkpoint"]


def _note(ex: dict[str, Any]) -> str:
    name = ex["vkey"].split("+")[0]
    return ex["text"] + "\n" + f"{EM_DASH} {name} {ex['signature']}\n"


def _signer_from_skey(skey: str) -> NoteSigner:
    _, _, name, _, b64 = skey.split("+", 4)
    raw = base64.b64decode(b64)
    assert raw[0] == 0x01
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))


@pytest.mark.parametrize("ex", EXAMPLES, ids=lambda e: e["vkey"].split("+")[0])
def test_spec_examples_verify(ex: dict[str, Any]) -> None:
    v = NoteVerifier.from_vkey(ex["vkey"])
    assert v.vkey() == ex["vkey"]
    text, who = open_note(_note(ex), [v])
    assert text == ex["text"] and [w.name for w in who] == [v.name]


def test_our_signing_reproduces_the_spec_signature() -> None:
    ex = EXAMPLES[0]
    signer = _signer_from_skey(ex["skey"])
    assert signer.verifier().vkey() == ex["vkey"]
    assert signer.sign_note(ex["text"]) == _note(ex)


@pytest.mark.parametrize("ex", EXAMPLES, ids=lambda e: e["vkey"].split("+")[0])
def test_changed_text_or_signature_fails(ex: dict[str, Any]) -> None:
    v = NoteVerifier.from_vkey(ex["vkey"])
    note = _note(ex)
    with pytest.raises(SignatureInvalid):
        open_note(note.replace("is", "was", 1), [v])
    sig = bytearray(base64.b64decode(ex["signature"]))
    sig[10] ^= 1
    bad = ex["text"] + "\n" + f"{EM_DASH} {v.name} {base64.b64encode(bytes(sig)).decode()}\n"
    with pytest.raises(SignatureInvalid):
        open_note(bad, [v])


def test_unknown_keys_are_ignored_but_some_known_key_must_sign() -> None:
    a, b = EXAMPLES
    va, vb = NoteVerifier.from_vkey(a["vkey"]), NoteVerifier.from_vkey(b["vkey"])
    with pytest.raises(SignatureInvalid):
        open_note(_note(a), [vb])
    stranger = NoteSigner("stranger.example", Ed25519PrivateKey.generate())
    both = _note(a) + stranger.sign(a["text"]).line()
    assert open_note(both, [va])[0] == a["text"]


def test_vkey_with_wrong_key_id_is_refused() -> None:
    vkey = EXAMPLES[0]["vkey"].replace("c74f20a3", "c74f20a4")
    with pytest.raises(SignatureInvalid):
        NoteVerifier.from_vkey(vkey)


@pytest.mark.parametrize(
    "note",
    [
        "no signatures\n",
        "text\n\n",
        "text\n\n- name AAAA\n",
        f"text\n\n{EM_DASH} name not-base64!\n",
        f"text\n\n{EM_DASH} name AAAA\n",
        f"text\n\n{EM_DASH} bad+name AAAAAAAA\n",
        f"text\x01\n\n{EM_DASH} name AAAAAAAA\n",
        f"text\n\n{EM_DASH} name AAAAAAAA",
        "x" * 70000,
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(SignatureInvalid):
        parse_note(note)


def test_checkpoint_vector_reproduced_by_our_code() -> None:
    log_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(CP["log_seed"]))
    signer = NoteSigner(CP["origin"], log_key)
    assert signer.verifier().vkey() == CP["log_vkey"]
    cp = parse_checkpoint(CP["body"])
    assert cp.body() == CP["body"] and cp.size == 8
    assert cp.root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert sign_checkpoint(cp, signer) == CP["note"]
    assert verify_checkpoint(CP["note"], NoteVerifier.from_vkey(CP["log_vkey"])) == cp


def test_cosignature_vector_round_trip() -> None:
    wkey = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(CP["witness_seed"]))
    cosigner = Cosigner(CP["witness"], wkey)
    assert cosigner.verifier().vkey() == CP["witness_vkey"]
    line = cosigner.cosign(CP["body"], CP["timestamp"]).line()
    assert line == CP["cosignature_line"]
    cosigned = cosigner.cosign_note(CP["note"], CP["timestamp"])
    assert cosigned == CP["note"] + CP["cosignature_line"]
    wv = NoteVerifier.from_vkey(CP["witness_vkey"])
    got = verify_cosignatures(cosigned, [wv])
    assert [(c.witness, c.timestamp) for c in got] == [(CP["witness"], CP["timestamp"])]
    # the log's own signature still verifies with the cosignature present
    verify_checkpoint(cosigned, NoteVerifier.from_vkey(CP["log_vkey"]))


def test_forged_cosignature_by_a_known_witness_is_refused() -> None:
    wv = NoteVerifier.from_vkey(CP["witness_vkey"])
    raw = bytearray(base64.b64decode(CP["cosignature_line"].split(" ")[2]))
    raw[7] ^= 1  # change the timestamp: the signature no longer covers it
    forged = f"{EM_DASH} {CP['witness']} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(SignatureInvalid):
        verify_cosignatures(CP["note"] + forged, [wv])
    # a cosignature key is not a note key: it cannot stand in for the log's signature
    with pytest.raises(SignatureInvalid):
        open_note(CP["note"] + CP["cosignature_line"], [wv])


@pytest.mark.parametrize(
    "body",
    [
        "origin\n8\n",
        "origin\n08\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
        "origin\n-1\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
        "origin\n8\nnot base64\n",
        "origin\n8\nAAAA\n",
        "\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
        "origin\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "origin\n99999999999999999999\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
    ],
)
def test_malformed_checkpoints_are_refused(body: str) -> None:
    with pytest.raises(SignatureInvalid):
        parse_checkpoint(body)


def test_checkpoint_with_extension_lines_parses() -> None:
    body = CP["body"] + "extension line\n"
    assert parse_checkpoint(body).size == 8


def test_checkpoint_signed_by_another_origin_is_refused() -> None:
    other = NoteSigner("other.example/log", Ed25519PrivateKey.generate())
    cp = Checkpoint("accord.test/audit", 1, b"\x00" * 32)
    with pytest.raises(SignatureInvalid):
        sign_checkpoint(cp, other)
    note = other.sign_note(cp.body())
    with pytest.raises(SignatureInvalid):
        verify_checkpoint(note, other.verifier())
