"""Invariant 3: any change, deletion, insertion, reorder or truncation is detected.

A base log (40 entries, a checkpoint every 8, each cosigned by a witness) is built
once; every Hypothesis example tampers with a fresh copy of its SQLite database
(triggers dropped, as an operator with file access could) or of its export bundle,
and ``verify`` / ``verify_export`` must report damage naming the first bad seq (or,
for damage only a tree root reveals, a range that holds it).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import rfc8785
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import AuditLog, VerifyReport, engine_for, verify_export
from audit.dbverify import verify_database
from audit.entry import chain_hash, parse_entry
from audit.merkle import leaf_hash
from audit.note import NoteVerifier
from tests.audit.conftest import entry, log_signer, witness_cosigner
from tests.audit.forge import forge_log

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


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
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


# -- the database ------------------------------------------------------------


class TamperedDb:
    def __init__(self, base: Base) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.path = self.dir / "t.db"
        shutil.copy(base.db, self.path)
        self.base = base
        self.db = sqlite3.connect(self.path, isolation_level=None)
        for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type='trigger'"):
            self.db.execute(f"DROP TRIGGER {name}")

    def row(self, seq: int) -> tuple[bytes, bytes, bytes]:
        r = self.db.execute(
            "SELECT data, leaf_hash, chain_hash FROM audit_entries WHERE seq=?", (seq,)
        ).fetchone()
        return bytes(r[0]), bytes(r[1]), bytes(r[2])

    def verify(self, extra: list[str] | None = None) -> VerifyReport:
        self.db.close()
        engine = engine_for(f"sqlite:///{self.path}")
        try:
            return verify_database(
                engine,
                log_key=self.base.log_key,
                witness_keys=[self.base.witness_key],
                extra_checkpoints=extra or [],
            )
        finally:
            engine.dispose()
            shutil.rmtree(self.dir, ignore_errors=True)


def test_untouched_database_verifies_with_witnessed_checkpoints(base: Base) -> None:
    t = TamperedDb(base)
    report = t.verify(base.witnessed)
    assert report.ok and report.size == N, report.to_json()
    assert report.cosigned == {"witness.test/w1": N}
    assert report.checkpoints_verified == 2 * (N // EVERY)


@SETTINGS
@given(k=st.integers(0, N - 1), pos=st.integers(0, 10_000), delta=st.integers(1, 255))
def test_db_any_changed_byte_is_found(base: Base, k: int, pos: int, delta: int) -> None:
    t = TamperedDb(base)
    data = bytearray(t.row(k)[0])
    pos %= len(data)
    data[pos] = (data[pos] + delta) % 256
    t.db.execute("UPDATE audit_entries SET data=? WHERE seq=?", (bytes(data), k))
    names(t.verify(), k, "entry_changed")


@SETTINGS
@given(k=st.integers(0, N - 1))
def test_db_deleted_entry_is_found(base: Base, k: int) -> None:
    t = TamperedDb(base)
    t.db.execute("DELETE FROM audit_entries WHERE seq=?", (k,))
    names(t.verify(), k, "missing", "truncated")


@SETTINGS
@given(k=st.integers(0, N - 1))
def test_db_inserted_entry_is_found(base: Base, k: int) -> None:
    t = TamperedDb(base)
    prev_chain = t.row(k - 1)[2] if k else b"\x00" * 32
    doc = parse_entry(t.row(k)[0])
    forged = rfc8785.dumps({**doc, "actor": "mallory"})
    for s in range(N - 1, k - 1, -1):
        t.db.execute("UPDATE audit_entries SET seq=? WHERE seq=?", (s + 1, s))
    lh = leaf_hash(forged)
    t.db.execute(
        "INSERT INTO audit_entries (seq, ts, event, data, leaf_hash, chain_hash) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (k, doc["ts"], doc["event"], forged, lh, chain_hash(prev_chain, lh)),
    )
    t.db.execute("UPDATE audit_head SET size=size+1")
    names(t.verify(), k, "inserted", "checkpoint_mismatch")


@SETTINGS
@given(j=st.integers(0, N - 2), gap=st.integers(1, N - 1))
def test_db_swapped_entries_are_found(base: Base, j: int, gap: int) -> None:
    k = min(N - 1, j + gap)
    t = TamperedDb(base)
    rj, rk = t.row(j), t.row(k)
    upd = "UPDATE audit_entries SET data=?, leaf_hash=?, chain_hash=? WHERE seq=?"
    t.db.execute(upd, (*rk, j))
    t.db.execute(upd, (*rj, k))
    names(t.verify(), j, "out_of_order")


@SETTINGS
@given(k=st.integers(0, N - 1), drop_checkpoints=st.booleans())
def test_db_truncation_behind_a_checkpoint_is_found(
    base: Base, k: int, drop_checkpoints: bool
) -> None:
    t = TamperedDb(base)
    t.db.execute("DELETE FROM audit_entries WHERE seq>=?", (k,))
    t.db.execute("UPDATE audit_head SET size=?", (k,))
    extra: list[str] = []
    if drop_checkpoints:  # the operator hides its own checkpoints; the witness kept them
        t.db.execute("DELETE FROM audit_checkpoints WHERE size>?", (k,))
        t.db.execute("DELETE FROM audit_cosignatures WHERE size>?", (k,))
        extra = base.witnessed
    names(t.verify(extra), k, "truncated")


def _rewrite(datas: list[bytes], k: int) -> list[bytes]:
    doc = parse_entry(datas[k])
    out = list(datas)
    out[k] = rfc8785.dumps({**doc, "actor": "someone-else"})
    return out


@SETTINGS
@given(k=st.integers(0, N - 1))
def test_db_consistent_rewrite_is_found_by_a_witnessed_checkpoint(base: Base, k: int) -> None:
    d = Path(tempfile.mkdtemp())
    engine = engine_for(f"sqlite:///{d / 'forged.db'}")
    try:
        sizes = list(range(EVERY, N + 1, EVERY))
        forge_log(engine, _rewrite(base.datas, k), log_signer(), sizes)
        alone = verify_database(engine, log_key=base.log_key)
        assert alone.ok  # without the witness, a consistent rewrite is indistinguishable
        report = verify_database(
            engine,
            log_key=base.log_key,
            witness_keys=[base.witness_key],
            extra_checkpoints=base.witnessed,
        )
        names(report, k, "checkpoint_mismatch")
    finally:
        engine.dispose()
        shutil.rmtree(d, ignore_errors=True)


def test_db_changed_tree_node_is_found(base: Base) -> None:
    t = TamperedDb(base)
    t.db.execute("UPDATE audit_nodes SET hash=? WHERE level=2 AND idx=3", (b"\x01" * 32,))
    names(t.verify(), 12, "tree_node_changed")


def test_db_changed_chain_hash_is_found(base: Base) -> None:
    t = TamperedDb(base)
    t.db.execute("UPDATE audit_entries SET chain_hash=? WHERE seq=21", (b"\x02" * 32,))
    names(t.verify(), 21, "chain_broken")


# -- the export bundle -------------------------------------------------------


class TamperedExport:
    def __init__(self, base: Base) -> None:
        self.root = Path(tempfile.mkdtemp())
        self.dir = self.root / "bundle"
        shutil.copytree(base.export, self.dir)
        self.base = base
        self.lines = (self.dir / "entries.jsonl").read_bytes().split(b"\n")[:-1]
        self.hashes = (self.dir / "hashes.txt").read_text().splitlines()

    def write(self) -> None:
        (self.dir / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in self.lines))
        (self.dir / "hashes.txt").write_text("".join(h + "\n" for h in self.hashes))

    def rehash(self) -> None:
        """Recompute hashes.txt for the lines as they are now (a careful forger)."""
        chain = b"\x00" * 32
        self.hashes = []
        for i, data in enumerate(self.lines):
            lh = leaf_hash(data)
            chain = chain_hash(chain, lh)
            self.hashes.append(f"{i} {lh.hex()} {chain.hex()}")

    def verify(self, extra: list[str] | None = None, **kw: object) -> VerifyReport:
        try:
            return verify_export(
                self.dir,
                log_key=self.base.log_key,
                witness_keys=[self.base.witness_key],
                extra_checkpoints=extra or [],
                **kw,  # type: ignore[arg-type]
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def test_untouched_export_verifies(base: Base) -> None:
    report = TamperedExport(base).verify(base.witnessed)
    assert report.ok and report.size == N and not report.warnings, report.to_json()
    assert report.cosigned == {"witness.test/w1": N}


@SETTINGS
@given(k=st.integers(0, N - 1), pos=st.integers(0, 10_000), delta=st.integers(1, 255))
def test_export_any_changed_byte_is_found(base: Base, k: int, pos: int, delta: int) -> None:
    t = TamperedExport(base)
    raw = bytearray((t.dir / "entries.jsonl").read_bytes())
    start = sum(len(x) + 1 for x in t.lines[:k])
    pos = start + pos % (len(t.lines[k]) + 1)  # any byte of line k, its newline included
    raw[pos] = (raw[pos] + delta) % 256
    (t.dir / "entries.jsonl").write_bytes(bytes(raw))
    names(t.verify(), k, "entry_changed", "malformed")


@SETTINGS
@given(k=st.integers(0, N - 1), careful=st.booleans())
def test_export_deleted_entry_is_found(base: Base, k: int, careful: bool) -> None:
    t = TamperedExport(base)
    del t.lines[k]
    if careful:
        t.rehash()
    else:
        del t.hashes[k]
    t.write()
    names(t.verify(), k)


@SETTINGS
@given(k=st.integers(0, N - 1))
def test_export_inserted_entry_is_found(base: Base, k: int) -> None:
    t = TamperedExport(base)
    doc = parse_entry(t.lines[k])
    t.lines.insert(k, rfc8785.dumps({**doc, "actor": "mallory"}))
    t.rehash()
    t.write()
    names(t.verify(), k)


@SETTINGS
@given(j=st.integers(0, N - 2), gap=st.integers(1, N - 1), careful=st.booleans())
def test_export_swapped_entries_are_found(base: Base, j: int, gap: int, careful: bool) -> None:
    k = min(N - 1, j + gap)
    t = TamperedExport(base)
    t.lines[j], t.lines[k] = t.lines[k], t.lines[j]
    if careful:
        t.rehash()
    else:
        t.hashes[j], t.hashes[k] = t.hashes[k], t.hashes[j]
    t.write()
    names(t.verify(), j)


@SETTINGS
@given(k=st.integers(0, N - 1), edit_manifest=st.booleans())
def test_export_truncation_behind_a_witnessed_checkpoint_is_found(
    base: Base, k: int, edit_manifest: bool
) -> None:
    t = TamperedExport(base)
    t.lines, t.hashes = t.lines[:k], t.hashes[:k]
    t.write()
    if edit_manifest:  # cut the claim too, and drop everything that mentions the rest
        m = json.loads((t.dir / "manifest.json").read_text())
        m["to_seq"] = k
        (t.dir / "manifest.json").write_text(json.dumps(m))
        for p in [*t.dir.glob("checkpoints/*.note"), *t.dir.glob("proofs/*.json")]:
            p.unlink()
    names(t.verify(base.witnessed), k, "truncated", "missing")


@SETTINGS
@given(k=st.integers(0, N - 1))
def test_export_consistent_rewrite_keeps_failing_the_witnessed_checkpoint(
    base: Base, k: int
) -> None:
    t = TamperedExport(base)
    t.lines = _rewrite(t.lines, k)
    t.rehash()
    t.write()
    signer = log_signer()
    from audit.checkpoint import Checkpoint, sign_checkpoint
    from audit.merkle import root_from_leaf_hashes

    for p in t.dir.glob("checkpoints/*.note"):
        size = int(p.stem)
        root = root_from_leaf_hashes(leaf_hash(x) for x in t.lines[:size])
        p.write_text(sign_checkpoint(Checkpoint(signer.name, size, root), signer))
    names(t.verify(base.witnessed), k, "checkpoint_mismatch")


@pytest.mark.postgres
def test_postgres_tampering_is_found(pg_url: str, make_log) -> None:  # type: ignore[no-untyped-def]
    log = make_log(pg_url)
    for i in range(20):
        log.append(entry(i))
    log.checkpoint()
    assert log.verify().ok
    with log.engine.begin() as conn:  # the schema owner can still switch the guards off
        conn.execute(sa.text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(sa.text("UPDATE audit_entries SET data = set_byte(data, 10, 88) WHERE seq=5"))
    r = log.verify()
    names(r, 5, "entry_changed")
    with log.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entries WHERE seq >= 5"))
    names(log.verify(), 5, "truncated")


def test_large_log_node_checks_run_in_pages(sqlite_url: str, make_log) -> None:  # type: ignore[no-untyped-def]
    """More entries than one verification page: every page of tree nodes is compared."""
    log = make_log(sqlite_url)
    for b in range(10):
        log.append_many([entry(b * 500 + i) for i in range(500)])
    log.checkpoint()
    assert log.verify().ok
    p = log.inclusion_proof(4321)
    p.verify()
    with log.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER audit_nodes_no_update"))
        conn.execute(
            sa.text("UPDATE audit_nodes SET hash = zeroblob(32) WHERE level=1 AND idx=2100")
        )
    names(log.verify(), 4200, "tree_node_changed")


@SETTINGS
@given(a=st.integers(0, N), b=st.integers(0, N), hashes_only=st.booleans())
def test_any_honest_export_range_verifies(base: Base, a: int, b: int, hashes_only: bool) -> None:
    """No false alarms: every range of an untouched log exports and verifies cleanly."""
    a, b = min(a, b), max(a, b)
    d = Path(tempfile.mkdtemp())
    engine = engine_for(f"sqlite:///{base.db}")
    log = AuditLog(engine, signer=log_signer(), witnesses=[base.witness_key], checkpoint_every=0)
    try:
        log.export(a, b, d / "bundle")
        report = verify_export(
            d / "bundle",
            log_key=base.log_key,
            witness_keys=[base.witness_key],
            extra_checkpoints=base.witnessed,
            full=not hashes_only,
        )
        assert report.ok and (report.start, report.size) == (a, b), report.to_json()
    finally:
        log.close()
        engine.dispose()
        shutil.rmtree(d, ignore_errors=True)
