"""``accord audit`` answers an auditor who does not trust the operator.

A damaged head is reported (exit 1, ``head_mismatch``), not a crash with exit 2;
pinned witnesses that cosigned nothing are said (and, with a quorum, fail);
a checkpoint row whose columns disagree with its signed note is damage; and the
signer's own record (``<key>.signed``) exposes a store rewritten behind it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from audit import AuditLog, engine_for
from tests.audit import test_cli
from tests.audit.conftest import LogFactory, entry, log_signer, witness_cosigner
from tests.audit.test_cli import Run
from tests.audit.test_signer_consistency import rewrite_store, sealed

run = test_cli.run  # the CLI fixtures
filled = test_cli.filled
VKEY = log_signer().verifier().vkey()


def _db(url: str) -> sqlite3.Connection:
    return sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)


def test_verify_reports_a_damaged_head_row_instead_of_failing(run: Run, filled: str) -> None:
    """The progress bar read the head (which raised) before the verifier ran."""
    db = _db(filled)
    db.execute("UPDATE audit_head SET frontier = X'00'")  # not whole hashes: head() raises
    db.close()
    code, out = run("verify", filled, "--log-vkey", VKEY)
    assert code == 1, out
    assert "DAMAGED" in out and "head_mismatch" in out and "frontier" in out
    code, out = run("verify", filled, "--log-vkey", VKEY, "--json")
    assert code == 1 and json.loads(out)["damage"]["kind"] == "head_mismatch"


def test_verify_reports_a_head_frontier_that_is_not_the_entries(run: Run, filled: str) -> None:
    """A frontier of the right shape but the wrong hashes: the next checkpoint would
    sign a root the entries do not have."""
    db = _db(filled)
    (blob,) = db.execute("SELECT frontier FROM audit_head").fetchone()
    db.execute("UPDATE audit_head SET frontier = ?", (bytes(len(blob)),))
    db.close()
    code, out = run("verify", filled, "--log-vkey", VKEY, "--json")
    report = json.loads(out)
    assert code == 1 and report["damage"]["kind"] == "head_mismatch", out
    assert "frontier" in report["damage"]["detail"]


def test_pinned_witnesses_that_cosigned_nothing_are_reported(
    run: Run, filled: str, make_log: LogFactory
) -> None:
    w = witness_cosigner()
    wkey = w.verifier().vkey()
    code, out = run("verify", filled, "--log-vkey", VKEY, "--witness-vkey", wkey, "--json")
    report = json.loads(out)
    assert code == 0 and report["cosigned"] == {}
    assert any("no checkpoint is cosigned by pinned witness" in x for x in report["warnings"])
    code, out = run("verify", filled, "--log-vkey", VKEY, "--witness-vkey", wkey, "--json",
                    "--witness-quorum", "1")  # fmt: skip
    report = json.loads(out)
    assert code == 1 and report["damage"]["kind"] == "unwitnessed", out

    # Once the witness cosigned the checkpoint of 20, the quorum holds; what lies
    # beyond its cosignature is named.
    log: AuditLog = make_log(filled, witnesses=[w.verifier()])
    note = log.checkpoints()[1]
    assert log.record_cosignatures(note, [w.cosign_note(note, 1_700_000_000)[len(note) :]]) == [
        w.name
    ]
    code, out = run("verify", filled, "--log-vkey", VKEY, "--witness-vkey", wkey, "--json",
                    "--witness-quorum", "1")  # fmt: skip
    report = json.loads(out)
    assert code == 0 and report["cosigned"] == {w.name: 20}, out
    assert any("[20, 30) are not yet cosigned by 1" in x for x in report["warnings"])
    # Two pinned, one cosigned: a quorum of two fails; the silent one is named.
    other = witness_cosigner("witness.test/w2", bytes(range(64, 96))).verifier().vkey()
    code, out = run("verify", filled, "--log-vkey", VKEY, "--witness-vkey", wkey,
                    "--witness-vkey", other, "--witness-quorum", "2", "--json")  # fmt: skip
    report = json.loads(out)
    assert code == 1 and report["damage"]["kind"] == "unwitnessed"
    code, out = run("verify", filled, "--witness-quorum", "1")
    assert code == 2 and "--witness-quorum needs" in out


def test_library_verify_warns_about_silent_configured_witnesses(
    filled: str, make_log: LogFactory
) -> None:
    log = make_log(filled, witnesses=[witness_cosigner().verifier()])
    report = log.verify()
    assert report.ok and any("witness.test/w1" in w for w in report.warnings)


def test_a_checkpoint_row_whose_columns_are_not_its_note_is_damage(
    run: Run, filled: str, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.db"
    with _db(filled) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    for url, sql in (
        (filled, "UPDATE audit_checkpoints SET root = zeroblob(32) WHERE size = 10"),
        (f"sqlite:///{copy}", "UPDATE audit_checkpoints SET size = 15 WHERE size = 10"),
    ):
        db = _db(url)
        db.execute("DROP TRIGGER audit_checkpoints_no_update")
        db.execute(sql)
        db.close()
        code, out = run("verify", url, "--log-vkey", VKEY, "--json")
        report = json.loads(out)
        assert code == 1, (sql, out)
        assert report["damage"]["kind"] == "checkpoint_invalid", out
        assert "not its signed note's (size 10)" in report["damage"]["detail"]


def test_cli_refuses_to_sign_a_rewrite_and_verify_reports_it(
    run: Run, filled: str, tmp_path: Path
) -> None:
    """Attack (a) through the command line: the rewrite's checkpoint rows are gone,
    ``accord audit checkpoint`` refuses (exit 1), and ``verify`` with the published
    key pinned reports ``signer_state_mismatch`` from the record beside the key."""
    code, note = run("checkpoint", "--database-url", filled)
    record = tmp_path / ".accord-data" / "keys" / "log.pem.signed"
    assert code == 0 and record.read_text() == note
    kept = tmp_path / "from-node-1.signed"
    shutil.copy(record, kept)
    forged = sealed(f"sqlite:///{tmp_path / 'scratch.db'}", [entry(i + 700) for i in range(31)])
    engine_for(filled).dispose()
    rewrite_store(filled, forged)

    code, out = run("checkpoint", "--database-url", filled)
    assert code == 1 and "audit_signer_state_mismatch" in out, out
    assert record.read_text() == note
    code, out = run("verify", filled, "--log-vkey", VKEY)
    assert code == 1 and "signer_state_mismatch" in out, out
    # An auditor elsewhere, with the record collected from the node.
    record.unlink()
    code, out = run("verify", filled, "--log-vkey", VKEY, "--signer-state", str(kept), "--json")
    assert code == 1 and json.loads(out)["damage"]["kind"] == "signer_state_mismatch"
    code, out = run("verify", filled, "--log-vkey", VKEY, "--json")  # without it: unseen
    assert code == 0
