"""Accord's tamper-evident audit log, usable on its own.

A hash chain anyone can recompute and an RFC 9162 Merkle tree with C2SP signed
checkpoints, witness cosignatures, inclusion and consistency proofs. The package
imports nothing from the gateway, so an auditor can ``pip install`` it and verify
an exported bundle offline (``audit.verify_export``).
"""

from __future__ import annotations

from audit.checkpoint import Checkpoint, Cosigner, verify_checkpoint, verify_cosignatures
from audit.errors import (
    AuditError,
    AuditUnavailable,
    EntryInvalid,
    NotFound,
    ProofError,
    SignatureInvalid,
    WitnessRefused,
)
from audit.export import verify_export
from audit.log import AuditLog
from audit.note import NoteSigner, NoteVerifier
from audit.records import Appended, ConsistencyProof, Head, InclusionProof, LogEntry
from audit.report import Damage, VerifyReport
from audit.store import create_schema, engine_for

__all__ = [
    "Appended",
    "AuditError",
    "AuditLog",
    "AuditUnavailable",
    "Checkpoint",
    "ConsistencyProof",
    "Cosigner",
    "Damage",
    "EntryInvalid",
    "Head",
    "InclusionProof",
    "LogEntry",
    "NotFound",
    "NoteSigner",
    "NoteVerifier",
    "ProofError",
    "SignatureInvalid",
    "VerifyReport",
    "WitnessRefused",
    "create_schema",
    "engine_for",
    "verify_checkpoint",
    "verify_cosignatures",
    "verify_export",
]
