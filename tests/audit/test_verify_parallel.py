"""``verify_export`` split over worker processes says exactly what it says alone.

Every case runs the bundle twice, in one process (``jobs=1``) and in chunks of a
few entries on two workers, and requires the same report: the same first bad seq,
kind and detail for every tamper, wherever it lands against the chunk edges
(the first and last entry of every chunk, a chain rewritten inside one chunk only,
a chunk whose first entry lies about its seq), and the same root and chain hash
when nothing is wrong.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from audit import AuditLog, VerifyReport, engine_for, verify_export
from audit._parallel import Chunk, check_chunk, plan, run_chunks
from audit.cli import audit_app
from audit.entry import ZERO_CHAIN, chain_hash, parse_entry
from audit.export import _feed_chunks
from audit.merkle import leaf_hash
from audit.verify import ChainVerifier
from tests.audit.conftest import log_signer
from tests.audit.tamper_support import EVERY, SETTINGS, Base, N, _rewrite, names

CHUNK = 1200  # bytes of entries.jsonl a chunk: three or four entries of the base log


class Bundle:
    """A copy of the base export to tamper with, as lines and hashes.txt rows."""

    def __init__(self, base: Base, root: Path) -> None:
        self.base = base
        self.dir = root / "bundle"
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.copytree(base.export, self.dir)
        self.lines = self.entries.read_bytes().split(b"\n")[:-1]
        self.hashes = (self.dir / "hashes.txt").read_text().splitlines()

    @property
    def entries(self) -> Path:
        return self.dir / "entries.jsonl"

    def write(self) -> None:
        self.entries.write_bytes(b"".join(x + b"\n" for x in self.lines))
        (self.dir / "hashes.txt").write_text("".join(h + "\n" for h in self.hashes))

    def rehash(self, lo: int = 0, hi: int | None = None) -> None:
        """Rewrite hashes.txt rows ``[lo, hi)`` consistently for the lines as they are."""
        hi = len(self.lines) if hi is None else hi
        chain = bytes.fromhex(self.hashes[lo - 1].split()[2]) if lo else ZERO_CHAIN
        rows = []
        for i in range(lo, hi):
            lh = leaf_hash(self.lines[i])
            chain = chain_hash(chain, lh)
            rows.append(f"{i} {lh.hex()} {chain.hex()}")
        self.hashes[lo:hi] = rows

    def chunks(self) -> list[tuple[int, int]]:
        """Each chunk as the seqs ``[first, end)`` it holds (cut as the verifier cuts)."""
        raw = self.entries.read_bytes()
        return [
            (raw.count(b"\n", 0, lo), raw.count(b"\n", 0, hi))
            for lo, hi in plan(self.entries, 2, CHUNK)
        ]

    def verify(self, *, full: bool = True) -> VerifyReport:
        """The parallel report, after checking it is the one-process report."""
        kw = {
            "log_key": self.base.log_key,
            "witness_keys": [self.base.witness_key],
            "extra_checkpoints": self.base.witnessed,
            "full": full,
        }
        alone = verify_export(self.dir, jobs=1, **kw)  # type: ignore[arg-type]
        split = verify_export(self.dir, jobs=2, chunk_bytes=CHUNK, **kw)  # type: ignore[arg-type]
        assert split.to_json() == alone.to_json()
        return split


@pytest.fixture
def bundle(base: Base, tmp_path: Path) -> Bundle:
    return Bundle(base, tmp_path)


def _flip(b: Bundle, seq: int, at: int = 5) -> None:
    raw = bytearray(b.entries.read_bytes())
    pos = sum(len(x) + 1 for x in b.lines[:seq]) + at
    raw[pos] ^= 0x01
    b.entries.write_bytes(bytes(raw))


# -- the plan and the happy path ----------------------------------------------


def test_chunks_are_whole_lines_that_tile_the_file(bundle: Bundle) -> None:
    raw = bundle.entries.read_bytes()
    spans = plan(bundle.entries, 2, CHUNK)
    assert len(spans) >= 8
    assert spans[0][0] == 0 and spans[-1][1] == len(raw)
    for (_, hi), (lo, _) in pairwise(spans):
        assert hi == lo and raw[lo - 1 : lo] == b"\n"


def test_small_bundles_stay_in_one_process(bundle: Bundle) -> None:
    assert len(plan(bundle.entries, 8)) == 1  # under MIN_SPLIT
    assert len(plan(bundle.entries, 1, CHUNK)) > 1  # an explicit chunk size is obeyed


@pytest.mark.parametrize("full", [True, False])
def test_untouched_bundle_is_accepted_chunk_by_chunk(bundle: Bundle, full: bool) -> None:
    report = bundle.verify(full=full)
    assert report.ok and report.size == N and report.checkpoints_verified >= N // EVERY
    assert report.cosigned == {"witness.test/w1": N}
    v = ChainVerifier(
        checkpoints=bundle.base.witnessed,
        log_key=bundle.base.log_key,
        witness_keys=[bundle.base.witness_key],
        full=full,
    )
    # Every chunk came back from a worker whole: nothing was left to the one-by-one path.
    assert _feed_chunks(bundle.dir, v, N, 2, CHUNK) == bundle.entries.stat().st_size
    assert (v.next, v.cr.root(), v.chain) == (N, report.root, report.chain_hash)
    assert v.verified == len(bundle.base.witnessed) and v.damage is None


def test_spawned_workers_give_the_same_runs(bundle: Bundle) -> None:
    """Workers take only picklable arguments: a fresh interpreter gets the same answers."""
    chunks = [
        Chunk(
            str(bundle.entries),
            str(bundle.dir / "hashes.txt"),
            lo,
            hi,
            0,
            N,
            ZERO_CHAIN,
            (8, 40),
            False,
        )
        for lo, hi in plan(bundle.entries, 2, 4 * CHUNK)
    ]
    here = [check_chunk(c) for c in chunks]
    assert all(len(runs) == 1 for runs in here)
    assert list(run_chunks(chunks, 2, method="spawn")) == here


# -- tampering, against the chunk edges ------------------------------------------


def test_changed_entry_at_every_chunk_edge(base: Base, tmp_path: Path) -> None:
    edges = sorted({s for first, end in Bundle(base, tmp_path).chunks() for s in (first, end - 1)})
    assert 0 in edges and N - 1 in edges  # the first and last chunk's outer edges too
    for seq in edges:
        b = Bundle(base, tmp_path)
        _flip(b, seq)
        names(b.verify(), seq, "entry_changed", "malformed")
        names(b.verify(full=False), seq, "entry_changed")


def test_deleted_entry_at_every_chunk_start(base: Base, tmp_path: Path) -> None:
    for first, _ in Bundle(base, tmp_path).chunks():
        b = Bundle(base, tmp_path)
        del b.lines[first]
        del b.hashes[first]
        b.write()
        names(b.verify(), first)


def _quiet_chunk(b: Bundle) -> tuple[int, int]:
    """A middle chunk with no checkpoint size inside it: only the next chunk's first
    link can notice a rewrite confined to it."""
    for first, end in b.chunks()[1:-1]:
        if not any(first < s <= end for s in range(EVERY, N + 1, EVERY)) and end - first > 1:
            return first, end
    raise AssertionError("no chunk without a checkpoint: make CHUNK smaller")


@pytest.mark.parametrize("full", [True, False])
def test_chain_rewritten_inside_one_chunk_breaks_at_the_next_chunk(
    bundle: Bundle, full: bool
) -> None:
    first, end = _quiet_chunk(bundle)
    bundle.lines = _rewrite(bundle.lines, first + 1)
    bundle.rehash(first + 1, end)  # consistent inside the chunk; the stored links after it are not
    bundle.write()
    report = bundle.verify(full=full)
    names(report, end, "chain_broken")


def test_chain_rewritten_to_the_end_of_the_bundle_fails_the_witnessed_root(
    bundle: Bundle,
) -> None:
    first, _ = _quiet_chunk(bundle)
    bundle.lines = _rewrite(bundle.lines, first)
    bundle.rehash(first)
    bundle.write()
    names(bundle.verify(), first, "checkpoint_mismatch")


@pytest.mark.parametrize("full", [True, False])
def test_chunk_whose_first_entry_lies_about_its_seq(bundle: Bundle, full: bool) -> None:
    first, _ = bundle.chunks()[2]
    doc = parse_entry(bundle.lines[first])
    bundle.lines[first] = rfc8785.dumps({**doc, "seq": doc["seq"] + 3})
    bundle.rehash()  # a careful forger: every stored hash agrees with the lines
    bundle.write()
    names(bundle.verify(full=full), first, "out_of_order" if full else "checkpoint_mismatch")


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("hashed", [False, True])
def test_extra_line_at_the_end(bundle: Bundle, hashed: bool, full: bool) -> None:
    bundle.lines.append(bundle.lines[-1])
    if hashed:  # hashes.txt gets a consistent row for it too
        bundle.hashes.append(bundle.hashes[-1])
        bundle.rehash(N)
    bundle.write()
    names(bundle.verify(full=full), N, "inserted")


def test_missing_newline_at_the_end(bundle: Bundle) -> None:
    bundle.entries.write_bytes(bundle.entries.read_bytes()[:-1])
    names(bundle.verify(), N - 1, "malformed")


@SETTINGS
@given(k=st.integers(0, N - 1), pos=st.integers(0, 10_000), delta=st.integers(1, 255))
def test_any_changed_byte_is_found_as_alone(
    base: Base, tmp_path: Path, k: int, pos: int, delta: int
) -> None:
    b = Bundle(base, tmp_path)
    raw = bytearray(b.entries.read_bytes())
    at = sum(len(x) + 1 for x in b.lines[:k]) + pos % (len(b.lines[k]) + 1)
    raw[at] = (raw[at] + delta) % 256
    b.entries.write_bytes(bytes(raw))
    names(b.verify(), k, "entry_changed", "malformed")


@SETTINGS
@given(
    j=st.integers(0, N - 1),
    k=st.integers(0, N - 1),
    how=st.sampled_from(["delete", "insert", "swap"]),
    careful=st.booleans(),
)
def test_any_reordering_is_found_as_alone(
    base: Base, tmp_path: Path, j: int, k: int, how: str, careful: bool
) -> None:
    b = Bundle(base, tmp_path)
    j, k = min(j, k), max(j, k)
    if how == "delete":
        del b.lines[j], b.hashes[j]
    elif how == "insert":
        b.lines.insert(j, rfc8785.dumps({**parse_entry(b.lines[k]), "actor": "mallory"}))
        b.hashes.insert(j, b.hashes[j])
    elif j < k:
        b.lines[j], b.lines[k] = b.lines[k], b.lines[j]
        b.hashes[j], b.hashes[k] = b.hashes[k], b.hashes[j]
    if careful:
        b.rehash()
    b.write()
    report = b.verify()
    if how != "swap" or j < k:
        names(report, j)
    else:
        assert report.ok


# -- the join between chunks ------------------------------------------------------


def test_a_run_not_starting_from_the_chain_so_far_is_refused(bundle: Bundle) -> None:
    chunks = [
        Chunk(
            str(bundle.entries), str(bundle.dir / "hashes.txt"), lo, hi, 0, N, ZERO_CHAIN, (), False
        )
        for lo, hi in plan(bundle.entries, 2, CHUNK)
    ]
    [(_, first)], [(_, second)] = check_chunk(chunks[0]), check_chunk(chunks[1])
    v = ChainVerifier(full=False)
    assert not v.accept_run(second)  # not where the log is up to
    assert v.accept_run(first)
    state = (v.next, v.chain, v.cr.root())
    forged = replace(second, anchor=bytes(32))
    assert not v.accept_run(forged)  # the previous chunk's end is not this one's start
    assert (v.next, v.chain, v.cr.root()) == state
    assert v.accept_run(second)


# -- the command ------------------------------------------------------------------


def test_cli_verify_takes_jobs(bundle: Bundle) -> None:
    vkey = (bundle.dir / "keys" / "log.vkey").read_text().strip()
    runner = CliRunner()
    result = runner.invoke(
        audit_app, ["verify", str(bundle.dir), "--log-vkey", vkey, "--jobs", "2"]
    )
    assert result.exit_code == 0, result.output
    assert f"verified entries [0, {N})" in result.output
    assert runner.invoke(audit_app, ["verify", str(bundle.dir), "--jobs", "0"]).exit_code == 2


@SETTINGS
@given(a=st.integers(0, N), b=st.integers(0, N), full=st.booleans())
def test_any_honest_range_verifies_split_as_alone(
    base: Base, tmp_path: Path, a: int, b: int, full: bool
) -> None:
    a, b = min(a, b), max(a, b)
    d = tmp_path / f"range-{a}-{b}-{full}"
    shutil.rmtree(d, ignore_errors=True)
    engine = engine_for(f"sqlite:///{base.db}")
    log = AuditLog(engine, signer=log_signer(), witnesses=[base.witness_key], checkpoint_every=0)
    try:
        log.export(a, b, d)
    finally:
        log.close()
        engine.dispose()
    kw = {
        "log_key": base.log_key,
        "witness_keys": [base.witness_key],
        "extra_checkpoints": base.witnessed,
        "full": full,
    }
    alone = verify_export(d, jobs=1, **kw)  # type: ignore[arg-type]
    split = verify_export(d, jobs=2, chunk_bytes=CHUNK, **kw)  # type: ignore[arg-type]
    assert split.to_json() == alone.to_json()
    assert split.ok and (split.start, split.size) == (a, b), split.to_json()
