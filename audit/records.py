"""Value objects the log hands out: appended entries, stored entries, proofs.

Proofs carry everything a stranger needs to check them (sizes, roots, hashes and,
when there is one, the signed checkpoint), and serialise to plain JSON with
base64 hashes so any language can verify them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from audit.entry import parse_entry
from audit.errors import ProofError
from audit.merkle import verify_consistency, verify_inclusion

__all__ = ["Appended", "ConsistencyProof", "Head", "InclusionProof", "LogEntry"]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: Any) -> bytes:
    if not isinstance(s, str):
        raise ProofError("proof hashes must be base64 strings")
    try:
        out = base64.b64decode(s, validate=True)
    except ValueError as exc:
        raise ProofError("proof hash is not base64") from exc
    if len(out) != 32:
        raise ProofError("proof hash is not 32 bytes")
    return out


def _int(doc: dict[str, Any], key: str) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ProofError(f"proof field {key!r} must be a non-negative integer")
    return v


@dataclass(frozen=True)
class Appended:
    """What ``append`` returns once the entry is durable."""

    seq: int
    leaf_hash: bytes
    chain_hash: bytes
    entry_bytes: bytes
    ts: str


@dataclass(frozen=True)
class LogEntry:
    """One stored entry, as read back from the store."""

    seq: int
    ts: str
    event: str
    exchange_id: str | None
    subject: str | None
    entry_bytes: bytes
    leaf_hash: bytes
    chain_hash: bytes

    def doc(self) -> dict[str, Any]:
        return parse_entry(self.entry_bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "entry": self.doc(),
            "entry_b64": _b64(self.entry_bytes),
            "leaf_hash": self.leaf_hash.hex(),
            "chain_hash": self.chain_hash.hex(),
        }


@dataclass(frozen=True)
class Head:
    size: int
    chain_hash: bytes
    root: bytes
    ts: str


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 inclusion proof of leaf ``seq`` in the tree of ``tree_size`` leaves."""

    seq: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]
    root: bytes
    checkpoint: str | None = None

    def verify(self) -> None:
        """Raises ``ProofError`` unless the path leads from the leaf to ``root``."""
        verify_inclusion(self.leaf_hash, self.seq, self.tree_size, self.hashes, self.root)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "inclusion",
            "seq": self.seq,
            "tree_size": self.tree_size,
            "leaf_hash": _b64(self.leaf_hash),
            "hashes": [_b64(h) for h in self.hashes],
            "root": _b64(self.root),
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, doc: Any) -> InclusionProof:
        if not isinstance(doc, dict) or doc.get("type") != "inclusion":
            raise ProofError("not an inclusion proof")
        hashes = doc.get("hashes")
        if not isinstance(hashes, list) or len(hashes) > 64:
            raise ProofError("proof hashes must be a list of at most 64")
        cp = doc.get("checkpoint")
        return cls(
            seq=_int(doc, "seq"),
            tree_size=_int(doc, "tree_size"),
            leaf_hash=_unb64(doc.get("leaf_hash")),
            hashes=tuple(_unb64(h) for h in hashes),
            root=_unb64(doc.get("root")),
            checkpoint=cp if isinstance(cp, str) else None,
        )


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 consistency proof that tree ``new_size`` extends tree ``old_size``."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    hashes: tuple[bytes, ...]

    def verify(self) -> None:
        verify_consistency(self.old_size, self.new_size, self.old_root, self.new_root, self.hashes)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "consistency",
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": _b64(self.old_root),
            "new_root": _b64(self.new_root),
            "hashes": [_b64(h) for h in self.hashes],
        }

    @classmethod
    def from_json(cls, doc: Any) -> ConsistencyProof:
        if not isinstance(doc, dict) or doc.get("type") != "consistency":
            raise ProofError("not a consistency proof")
        hashes = doc.get("hashes")
        if not isinstance(hashes, list) or len(hashes) > 64:
            raise ProofError("proof hashes must be a list of at most 64")
        return cls(
            old_size=_int(doc, "old_size"),
            new_size=_int(doc, "new_size"),
            old_root=_unb64(doc.get("old_root")),
            new_root=_unb64(doc.get("new_root")),
            hashes=tuple(_unb64(h) for h in hashes),
        )
