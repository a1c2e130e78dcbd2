"""Checkpoints (c2sp.org/tlog-checkpoint) and witness cosignatures (c2sp.org/tlog-cosignature).

A checkpoint is the signed statement "the log named <origin> has <size> entries
whose RFC 9162 root is <root>". Witnesses append Ed25519 ``cosignature/v1``
lines after checking the new checkpoint extends the last one they saw, which is
what stops an operator from showing different histories to different people.
``SignerState`` is the log key's own memory of what it signed, which stops
someone who can write the store, but not read the key, from getting a rewritten
or forked history signed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.errors import AuditError, SignatureInvalid
from audit.merkle import verify_consistency
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
    "Signed",
    "SignerState",
    "SignerStateMismatch",
    "cosigned_message",
    "parse_checkpoint",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_cosignatures",
]

MAX_SIZE = (1 << 63) - 1

log = logging.getLogger("audit.checkpoint")


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


class SignerStateMismatch(AuditError):
    """The store's tree does not extend what the log key signed last: nothing is signed."""

    default_code = "audit_signer_state_mismatch"


@dataclass(frozen=True)
class Signed:
    """A checkpoint the log key signed, and its note."""

    checkpoint: Checkpoint
    note: str


class SignerState:
    """The last checkpoint the log key signed, kept outside the store.

    The store is not trusted by the signer: whoever can write it (the SQLite file,
    a DBA) but cannot read the key could otherwise rewrite history, delete the
    checkpoint rows and have the next checkpoint sign the rewrite, or get a second
    root signed for a size already signed. So the last signed note is kept in
    memory and in ``path`` (beside the key file, ``<key>.signed``, written
    atomically and synced), and a new tree is signed only if an RFC 9162
    consistency proof shows it extends that one. The file holds the signed note
    itself, so an auditor can check it like any other checkpoint.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.last: Signed | None = None
        #: Why signing was last refused (kept for the life of the process).
        self.incident: str | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the state while checking, signing and recording: threads of this
        process on a lock, other processes with the same key (workers, the CLI) on
        an ``flock`` of ``<path>.lock``."""
        with self._lock:
            if self.path is None:
                yield
                return
            import fcntl  # POSIX; only the signing gateway takes this path

            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def baselines(self, signer: NoteSigner) -> list[Signed]:
        """What was signed last, from memory and from the file (another process with
        the same key may have moved it on). Raises ``SignerStateMismatch`` for a
        file that cannot be read as a checkpoint of this log: never trust the store
        again because the memory of it was lost."""
        found = [s for s in (self.last, self._read(signer)) if s is not None]
        return list({(s.checkpoint.size, s.checkpoint.root): s for s in found}.values())

    def notes(self) -> list[str]:
        """The remembered notes (memory, file) for a verifier to hold the store to."""
        notes = [] if self.last is None else [self.last.note]
        if self.path is not None:
            with contextlib.suppress(OSError, UnicodeError):
                notes.append(self.path.read_text("utf-8"))
        return list(dict.fromkeys(notes))

    def _read(self, signer: NoteSigner) -> Signed | None:
        if self.path is None:
            return None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if self.last is not None:
                log.warning("signer state %s is gone: kept in memory, written again", self.path)
            return None
        except OSError as exc:
            raise SignerStateMismatch(f"cannot read the signer state {self.path}: {exc}") from exc
        try:
            parsed = parse_note(data)
            cp = parse_checkpoint(parsed.text)
            if cp.origin != signer.name:
                raise SignatureInvalid(f"it is a checkpoint of {cp.origin!r}, not {signer.name!r}")
            ours = [
                s for s in parsed.signatures if (s.name, s.key_id) == (signer.name, signer.key_id)
            ]
            if ours:
                signer.verifier().verify_signature(parsed.text.encode(), ours[0].signature)
            else:  # signed by the key this one replaced: continue from its tree
                log.warning("signer state %s was signed by another log key (rotated)", self.path)
        except AuditError as exc:
            raise SignerStateMismatch(
                f"the signer state {self.path} does not hold a checkpoint of this log: "
                f"{exc.detail} (move it aside only once the store is known to be right)"
            ) from exc
        return Signed(cp, parsed.render())

    @staticmethod
    def verify_extends(
        baselines: Sequence[Signed], size: int, root: bytes, prove: Callable[[int], list[bytes]]
    ) -> None:
        """Raise ``SignerStateMismatch`` unless the tree (``size``, ``root``) extends
        every baseline; ``prove(old)`` gives the store's consistency proof from ``old``."""
        for b in baselines:
            old = b.checkpoint
            if size < old.size:
                raise SignerStateMismatch(
                    f"the store's tree has {size} entries, but the log key signed "
                    f"{old.size}: entries were removed or the store replaced"
                )
            try:
                proof = prove(old.size) if 0 < old.size < size else []
                verify_consistency(old.size, size, old.root, root, proof)
            except AuditError as exc:
                raise SignerStateMismatch(
                    f"the store's tree of {size} entries does not extend the tree of "
                    f"{old.size} the log key signed ({exc.detail}): history was rewritten "
                    "or forked"
                ) from exc

    def record(self, signed: Signed) -> None:
        """Remember ``signed`` (already checked to extend every baseline): the file
        first, replaced atomically and synced, so nothing is published that a
        restart would forget."""
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, signed.note.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        if self.last is None or signed.checkpoint.size >= self.last.checkpoint.size:
            self.last = signed
