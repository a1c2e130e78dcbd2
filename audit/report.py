"""What a verification says: the first damage found (its kind, where), the tree it
reached, the checkpoints and witnesses that vouched for it, and warnings.

The same report comes from the database (``audit.dbverify``), an export
(``audit.export``) and a node's background watch (``audit.watch``); ``kind`` is
one of ``DAMAGE_KINDS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.note import ALG_COSIGNATURE_V1, NoteVerifier

__all__ = ["DAMAGE_KINDS", "Damage", "VerifyReport"]

DAMAGE_KINDS = (
    "malformed",  # bytes are not a canonical, schema-valid entry
    "entry_changed",  # bytes differ from the stored leaf hash
    "chain_broken",  # stored chain hash does not follow
    "missing",  # an entry is absent (deleted from the store or the end of the log)
    "out_of_order",  # a later entry sits where this one should (deleted or moved)
    "inserted",  # an entry appears that does not belong here (inserted or replayed)
    "tree_node_changed",  # a stored interior hash does not match the leaves
    "checkpoint_mismatch",  # recomputed root differs from a signed checkpoint
    "checkpoint_invalid",  # a checkpoint or cosignature does not verify
    "truncated",  # the log ends before a checkpoint's size
    "head_mismatch",  # the chain head disagrees with the entries
    "signer_state_mismatch",  # the log is not an extension of what the log key signed last
    "unwitnessed",  # fewer pinned witnesses than the quorum cosigned a checkpoint
    "bundle_invalid",  # an export's files cannot be read at all
)


@dataclass(frozen=True)
class Damage:
    kind: str
    seq: int | None
    detail: str
    end: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "end": self.end, "detail": self.detail}


@dataclass
class VerifyReport:
    ok: bool
    start: int
    size: int
    root: bytes
    chain_hash: bytes
    checkpoints_verified: int
    cosigned: dict[str, int] = field(default_factory=dict)
    damage: Damage | None = None
    warnings: list[str] = field(default_factory=list)
    #: The largest size a checkpoint in the range vouched for (None: none did).
    signed_to: int | None = None

    @property
    def first_bad_seq(self) -> int | None:
        return self.damage.seq if self.damage else None

    @property
    def kind(self) -> str | None:
        return self.damage.kind if self.damage else None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "start": self.start,
            "size": self.size,
            "root": self.root.hex(),
            "chain_hash": self.chain_hash.hex(),
            "checkpoints_verified": self.checkpoints_verified,
            "cosigned": self.cosigned,
            "damage": self.damage.to_json() if self.damage else None,
            "warnings": self.warnings,
            "signed_to": self.signed_to,
        }

    def check_witnesses(self, pinned: Sequence[NoteVerifier], quorum: int = 0) -> None:
        """Say which pinned witnesses cosigned no checkpoint here: without them a
        history the operator rewrote and re-signed would verify. With ``quorum``,
        fewer than that many cosigning witnesses is a failure (``unwitnessed``)."""
        names = sorted({w.name for w in pinned if w.alg == ALG_COSIGNATURE_V1})
        if not names or not self.ok:
            return
        silent = [n for n in names if n not in self.cosigned]
        if silent:
            self.warnings.append(
                "no checkpoint is cosigned by pinned witness(es) "
                f"{', '.join(silent)}: nothing but the log key vouches for this history"
                + ("" if len(silent) < len(names) else " (no witness cosigned any checkpoint)")
            )
        if quorum <= 0:
            return
        sizes = sorted((self.cosigned[n] for n in names if n in self.cosigned), reverse=True)
        if len(sizes) < quorum:
            self.ok = False
            self.damage = Damage(
                "unwitnessed",
                None,
                f"{len(sizes)} of the {len(names)} pinned witnesses cosigned a checkpoint; "
                f"{quorum} are required",
            )
        elif sizes[quorum - 1] < self.size:
            self.warnings.append(
                f"entries [{sizes[quorum - 1]}, {self.size}) are not yet cosigned by "
                f"{quorum} pinned witnesses"
            )

    def warn_unsigned(self) -> None:
        """Say which verified entries no checkpoint vouches for: whoever holds the log
        could still change them, consistently, without any verifier noticing."""
        if not self.ok or self.size <= self.start:
            return
        if self.signed_to is None:
            self.warnings.append(
                f"no checkpoint covers entries [{self.start}, {self.size}): none of them is signed"
            )
        elif self.signed_to < self.size:
            self.warnings.append(
                f"entries [{self.signed_to}, {self.size}) are covered by no checkpoint yet: "
                "they are not signed"
            )
