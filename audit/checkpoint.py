"""Checkpoints (c2sp.org/tlog-checkpoint) and witness cosignatures (c2sp.org/tlog-cosignature).

A checkpoint is the signed statement "the log named <origin> has <size> entries
whose RFC 9162 root is <root>". Witnesses append Ed25519 ``cosignature/v1``
lines after checking the new checkpoint extends the last one they saw, which is
what stops an operator from showing different histories to different people.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.errors import SignatureInvalid
from audit.note import (
    ALG_COSIGNATURE_V1,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    SignedNote,
    _raw_public,
    key_id,
    open_note,
    parse_note,
    verify_key_name,
)

__all__ = [
    "Checkpoint",
    "Cosignature",
    "Cosigner",
    "cosigned_message",
    "parse_checkpoint",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_cosignatures",
]

MAX_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (no signatures); refuses anything not byte-exact."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise SignatureInvalid("malformed checkpoint", code="audit_bad_checkpoint")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not origin or not size_s.isascii() or not size_s.isdigit():
        raise SignatureInvalid("malformed checkpoint", code="audit_bad_checkpoint")
    if size_s != str(int(size_s)) or int(size_s) > MAX_SIZE:
        raise SignatureInvalid("checkpoint size is not canonical", code="audit_bad_checkpoint")
    try:
        root = base64.b64decode(root_s, validate=True)
    except binascii.Error as exc:
        raise SignatureInvalid(
            "checkpoint root is not base64", code="audit_bad_checkpoint"
        ) from exc
    if len(root) != 32:
        raise SignatureInvalid("checkpoint root is not 32 bytes", code="audit_bad_checkpoint")
    return Checkpoint(origin, int(size_s), root)


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> str:
    if cp.origin != signer.name:
        raise SignatureInvalid("the log key name must be the checkpoint origin")
    return signer.sign_note(cp.body())


def verify_checkpoint(note: str | bytes, log_key: NoteVerifier) -> Checkpoint:
    """Verify the log's signature on a checkpoint note and return its content."""
    text, _ = open_note(note, [log_key])
    cp = parse_checkpoint(text)
    if cp.origin != log_key.name:
        raise SignatureInvalid("checkpoint origin is not the log key's name")
    return cp


def cosigned_message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


@dataclass(frozen=True)
class Cosignature:
    witness: str
    timestamp: int
    line: str


class Cosigner:
    """A witness's Ed25519 cosigning key (signature type 0x04)."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        verify_key_name(name)
        self.name = name
        self._key = key
        self.public = _raw_public(key.public_key())
        self.key_id = key_id(name, ALG_COSIGNATURE_V1, self.public)

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, ALG_COSIGNATURE_V1, self.public)

    def cosign(self, body: str, timestamp: int) -> NoteSignature:
        sig = self._key.sign(cosigned_message(body, timestamp))
        return NoteSignature(self.name, self.key_id, struct.pack(">Q", timestamp) + sig)

    def cosign_note(self, note: str, timestamp: int) -> str:
        """Append this witness's cosignature to a signed checkpoint note."""
        parsed = parse_note(note)
        return parsed.with_signature(self.cosign(parsed.text, timestamp)).render()


def verify_cosignatures(note: str | bytes, witnesses: list[NoteVerifier]) -> list[Cosignature]:
    """Return the valid cosignatures by known witnesses; a bad one by a known key raises."""
    parsed: SignedNote = parse_note(note)
    known = {(w.name, w.key_id): w for w in witnesses if w.alg == ALG_COSIGNATURE_V1}
    out: list[Cosignature] = []
    for sig in parsed.signatures:
        w = known.get((sig.name, sig.key_id))
        if w is None:
            continue
        if len(sig.signature) != 8 + 64:
            raise SignatureInvalid(f"cosignature by {w.name} has the wrong length")
        (ts,) = struct.unpack(">Q", sig.signature[:8])
        if ts > MAX_SIZE:
            raise SignatureInvalid(f"cosignature by {w.name} has a bad timestamp")
        w.verify_signature(cosigned_message(parsed.text, ts), sig.signature[8:])
        out.append(Cosignature(w.name, ts, sig.line()))
    return out
