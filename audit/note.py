"""C2SP signed notes with Ed25519 keys (c2sp.org/signed-note).

Checkpoints are signed notes, so any tool that speaks the format (Go's
``sumdb/note``, the transparency-dev witnesses) can check Accord's checkpoints.
Key names, key IDs and the ``vkey`` encoding follow the spec byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.errors import SignatureInvalid

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "EM_DASH",
    "MAX_SIGNATURES",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "SignedNote",
    "key_id",
    "load_private_key_pem",
    "open_note",
    "parse_note",
    "verify_key_name",
]

EM_DASH = "\u2014"
ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 64
MAX_NOTE_BYTES = 1 << 16


def verify_key_name(name: str) -> None:
    """Key names are non-empty and hold no whitespace or '+'."""
    if not name or "+" in name or any(c.isspace() for c in name):
        raise SignatureInvalid(f"bad key name {name!r}", code="audit_bad_key")


def key_id(name: str, alg: int, public: bytes) -> bytes:
    """SHA-256(name || 0x0A || alg || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from PEM (PKCS#8), refusing any other key type."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureInvalid(f"cannot read the private key: {exc}", code="audit_bad_key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureInvalid("the log key must be an Ed25519 key", code="audit_bad_key")
    return key


@dataclass(frozen=True)
class NoteSignature:
    """One parsed signature line."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{EM_DASH} {self.name} {blob}\n"


@dataclass(frozen=True)
class SignedNote:
    """A note's text (with its final newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signature(self, sig: NoteSignature) -> SignedNote:
        kept = tuple(s for s in self.signatures if (s.name, s.key_id) != (sig.name, sig.key_id))
        return SignedNote(self.text, (*kept, sig))


class NoteSigner:
    """Signs note text with an Ed25519 key under a key name (the log's origin)."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        verify_key_name(name)
        self.name = name
        self._key = key
        self.public = _raw_public(key.public_key())
        self.key_id = key_id(name, ALG_ED25519, self.public)

    @classmethod
    def from_pem(cls, name: str, pem: bytes) -> NoteSigner:
        return cls(name, load_private_key_pem(pem))

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, ALG_ED25519, self.public)

    def sign(self, text: str) -> NoteSignature:
        return NoteSignature(self.name, self.key_id, self._key.sign(text.encode()))

    def sign_note(self, text: str) -> str:
        """The full signed note for ``text``."""
        _check_text(text)
        return SignedNote(text, (self.sign(text),)).render()


@dataclass(frozen=True)
class NoteVerifier:
    """A verifier key: name, algorithm byte (0x01 note, 0x04 cosignature) and raw key."""

    name: str
    alg: int
    public: bytes

    def __post_init__(self) -> None:
        verify_key_name(self.name)
        if self.alg not in (ALG_ED25519, ALG_COSIGNATURE_V1) or len(self.public) != 32:
            raise SignatureInvalid("only Ed25519 verifier keys are supported", code="audit_bad_key")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.alg, self.public)

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+hexkeyid+base64(alg||key)``, checking the key ID."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise SignatureInvalid("malformed verifier key", code="audit_bad_key")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            want = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError) as exc:
            raise SignatureInvalid("malformed verifier key", code="audit_bad_key") from exc
        if len(raw) != 33 or len(want) != 4:
            raise SignatureInvalid("malformed verifier key", code="audit_bad_key")
        v = cls(name, raw[0], raw[1:])
        if v.key_id != want:
            raise SignatureInvalid("verifier key ID does not match the key", code="audit_bad_key")
        return v

    def vkey(self) -> str:
        blob = base64.b64encode(bytes([self.alg]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    def verify_signature(self, message: bytes, signature: bytes) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature as exc:
            raise SignatureInvalid(f"signature by {self.name} does not verify") from exc


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise SignatureInvalid("note text must end in a newline", code="audit_bad_note")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise SignatureInvalid("note holds control characters", code="audit_bad_note")


def parse_note(note: str | bytes) -> SignedNote:
    """Split a signed note into text and signature lines; raises on malformed input."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise SignatureInvalid("note is too large", code="audit_bad_note")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignatureInvalid("note is not UTF-8", code="audit_bad_note") from exc
    if len(note) > MAX_NOTE_BYTES:
        raise SignatureInvalid("note is too large", code="audit_bad_note")
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise SignatureInvalid("note has no signature block", code="audit_bad_note")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block.split("\n")
    if lines[-1] != "" or len(lines) < 2:
        raise SignatureInvalid("malformed signature block", code="audit_bad_note")
    sigs: list[NoteSignature] = []
    for line in lines[:-1]:
        sigs.append(_parse_sig_line(line))
    if len(sigs) > MAX_SIGNATURES:
        raise SignatureInvalid("too many signatures", code="audit_bad_note")
    return SignedNote(text, tuple(sigs))


def _parse_sig_line(line: str) -> NoteSignature:
    prefix = EM_DASH + " "
    if not line.startswith(prefix):
        raise SignatureInvalid("malformed signature line", code="audit_bad_note")
    parts = line[len(prefix) :].split(" ")
    if len(parts) != 2:
        raise SignatureInvalid("malformed signature line", code="audit_bad_note")
    name, b64 = parts
    verify_key_name(name)
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise SignatureInvalid("signature is not base64", code="audit_bad_note") from exc
    if len(raw) < 5:
        raise SignatureInvalid("signature is too short", code="audit_bad_note")
    return NoteSignature(name, raw[:4], raw[4:])


def open_note(note: str | bytes, verifiers: list[NoteVerifier]) -> tuple[str, list[NoteVerifier]]:
    """Verify ``note`` with the known Ed25519 (0x01) keys; return text and who signed.

    Unknown keys are ignored, a known key whose signature fails rejects the note,
    and a note no known key signed is rejected (signed-note §Signatures).
    """
    parsed = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers if v.alg == ALG_ED25519}
    ok: list[NoteVerifier] = []
    for sig in parsed.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        v.verify_signature(parsed.text.encode(), sig.signature)
        ok.append(v)
    if not ok:
        raise SignatureInvalid("no trusted key signed this note", code="audit_untrusted_note")
    return parsed.text, ok
