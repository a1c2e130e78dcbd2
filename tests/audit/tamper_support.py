"""Shared by the tamper suites: one honest base log, built once per module, and the
check that a report names the damaged seq.

The base log has 40 entries, a checkpoint every 8, each cosigned by a witness; the
suites tamper with copies of its SQLite file and of its export bundle.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
import rfc8785
from hypothesis import HealthCheck, settings

from audit import AuditLog, VerifyReport, engine_for
from audit.entry import parse_entry
from audit.note import NoteVerifier
from tests.audit.conftest import entry, log_signer, witness_cosigner

N = 40
EVERY = 8
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@dataclass
class Base:
    db: Path
    export: Path
    witnessed: list[str]
    datas: list[bytes]
    log_key: NoteVerifier
    witness_key: NoteVerifier


def build_base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """The honest base log and its export (the ``base`` fixture in conftest)."""
    d = tmp_path_factory.mktemp("tamper")
    cos = witness_cosigner()
    engine = engine_for(f"sqlite:///{d / 'base.db'}")
    log = AuditLog(
        engine,
        signer=log_signer(),
        checkpoint_every=0,
        checkpoint_interval_s=0,
        witnesses=[cos.verifier()],
    )
    log.create_schema()
    witnessed = []
    for i in range(N):
        log.append(entry(i))
        if (i + 1) % EVERY == 0:
            note = log.checkpoint()
            cosigned = cos.cosign_note(note, 1_700_000_000 + i)
            assert log.record_cosignatures(note, [cosigned[len(note) :]]) == [cos.name]
            witnessed.append(cosigned)
    log.export(0, N, d / "export")
    datas = [e.entry_bytes for e in log.entries(0, N)]
    assert log.verify().ok
    log.close()
    engine.dispose()
    with sqlite3.connect(d / "base.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Base(
        d / "base.db", d / "export", witnessed, datas, log_signer().verifier(), cos.verifier()
    )


def names(report: VerifyReport, seq: int, *kinds: str) -> None:
    """The report found damage at ``seq``, or in a root-checked range holding it."""
    assert not report.ok, report.to_json()
    d = report.damage
    assert d is not None
    if kinds:
        assert d.kind in kinds, report.to_json()
    if d.end is not None and d.kind in ("checkpoint_mismatch", "tree_node_changed"):
        assert d.seq is not None and d.seq <= seq < d.end, report.to_json()
    else:
        assert d.seq == seq, report.to_json()


def _rewrite(datas: list[bytes], k: int) -> list[bytes]:
    doc = parse_entry(datas[k])
    out = list(datas)
    out[k] = rfc8785.dumps({**doc, "actor": "someone-else"})
    return out
