"""Invariant 3 on the database: any change, deletion, insertion, reorder or truncation
of stored rows (triggers dropped, as an operator with file access could) is found by
``verify``, which names the first bad seq (or, for damage only a tree root reveals,
a range that holds it)."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
import rfc8785
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from audit import VerifyReport, engine_for
from audit.dbverify import verify_database
from audit.entry import chain_hash, parse_entry
from audit.merkle import leaf_hash
from audit.note import NoteSigner
from tests.audit.conftest import ORIGIN, entry, log_signer
from tests.audit.forge import forge_log
from tests.audit.tamper_support import (
    EVERY,
    SETTINGS,
    Base,
    N,
    _rewrite,
    names,
)

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


def test_a_log_re_signed_with_another_key_names_the_checkpoint(base: Base) -> None:
    """A rewritten log re-signed with a key of its own fails against the pinned key,
    and the report says which checkpoint did not verify."""
    d = Path(tempfile.mkdtemp())
    engine = engine_for(f"sqlite:///{d / 'forged.db'}")
    try:
        other = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
        forge_log(engine, _rewrite(base.datas, 3), other, [EVERY])
        report = verify_database(engine, log_key=base.log_key)
        assert report.kind == "checkpoint_invalid"
        assert report.damage is not None
        assert f"the checkpoint of size {EVERY} does not verify" in report.damage.detail
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
