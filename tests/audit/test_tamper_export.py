"""Invariant 3 on export bundles: every tamper with the files is found by
``verify_export``, naming the first bad seq; and every honest range verifies."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from audit import AuditLog, VerifyReport, engine_for, verify_export
from audit.entry import chain_hash, parse_entry
from audit.merkle import leaf_hash
from tests.audit.conftest import log_signer
from tests.audit.tamper_support import (
    SETTINGS,
    Base,
    N,
    _rewrite,
    names,
)

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
