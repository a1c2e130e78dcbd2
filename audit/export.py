"""Export a range of the log as a self-contained evidence bundle, and verify one offline.

The bundle holds the exact entry bytes (one per line: each line *is* the canonical
JSON entry), their leaf and chain hashes, the signed checkpoints with witness
cosignatures, consistency proofs tying the range to a checkpoint, the public keys
and a README. ``verify_export`` needs nothing but this package and treats every
file as hostile: damage is reported, never raised as a traceback.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import sqlalchemy as sa

from audit import reads, store
from audit._parallel import BLOCK, Chunk, default_jobs, plan, run_chunks
from audit._runs import hashes_len
from audit.checkpoint import verify_checkpoint
from audit.entry import MAX_ENTRY_BYTES, ZERO_CHAIN, format_ts
from audit.errors import AuditError, NotFound
from audit.merkle import CompactRange, range_nodes
from audit.note import NoteVerifier
from audit.readme import EXPORT_README
from audit.records import ConsistencyProof
from audit.report import Damage, VerifyReport
from audit.verify import ChainVerifier

if TYPE_CHECKING:
    from audit.log import AuditLog

__all__ = ["FORMAT", "export_bundle", "verify_export"]

FORMAT = "accord-audit-export/1"
MAX_MANIFEST = 1 << 20


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def export_bundle(log: AuditLog, from_seq: int, to_seq: int, directory: Path) -> Path:
    """Write entries ``[from_seq, to_seq)`` with the evidence that authenticates them."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise AuditError(f"{directory} is not empty", code="audit_export_exists")
    with log.engine.connect() as conn:
        head = reads.read_head(conn)
        if not 0 <= from_seq <= to_seq <= head.size:
            raise NotFound(f"cannot export [{from_seq}, {to_seq}) of a log of {head.size}")
        start_nodes = range_nodes(0, from_seq)
        got = reads.fetch_nodes(conn, start_nodes)
        frontier = [got[n] for n in start_nodes]
        prev_chain = ZERO_CHAIN
        if from_seq > 0:
            row = conn.execute(
                sa.select(store.entries.c.chain_hash).where(store.entries.c.seq == from_seq - 1)
            ).first()
            if row is None:
                raise NotFound(f"entry {from_seq - 1} is missing")
            prev_chain = reads.as_bytes(row[0])
        with (
            open(directory / "entries.jsonl", "wb") as fe,
            open(directory / "hashes.txt", "w", encoding="ascii") as fh,
        ):
            for r in reads.iter_entries(conn, from_seq, to_seq):
                fe.write(reads.as_bytes(r.data) + b"\n")
                leaf, chain = reads.as_bytes(r.leaf_hash), reads.as_bytes(r.chain_hash)
                fh.write(f"{r.seq} {leaf.hex()} {chain.hex()}\n")
            fe.flush()
            os.fsync(fe.fileno())
        cps = reads.checkpoint_rows(conn)
        in_range = [r for r in cps if from_seq <= int(r.size) <= to_seq]
        after = [r for r in cps if int(r.size) > to_seq]
        chosen = in_range + after[:1]
        for r in chosen:
            note = str(r.note) + "".join(reads.cosignature_lines(conn, int(r.size)))
            _write(directory / "checkpoints" / f"{int(r.size):020d}.note", note)
    sizes = [int(r.size) for r in chosen]
    pairs = list(itertools.pairwise(sizes))
    if after:
        pairs.append((to_seq, int(after[0].size)))
    for old, new in pairs:
        proof = log.consistency_proof(old, new)
        _write(
            directory / "proofs" / f"consistency-{old}-{new}.json",
            json.dumps(proof.to_json(), indent=2) + "\n",
        )
    key = log.log_key
    if key is not None:
        _write(directory / "keys" / "log.vkey", key.vkey() + "\n")
    _write(directory / "keys" / "witnesses.vkeys", "".join(w.vkey() + "\n" for w in log.witnesses))
    manifest = {
        "format": FORMAT,
        "origin": key.name if key else None,
        "from_seq": from_seq,
        "to_seq": to_seq,
        "prev_chain_hash": prev_chain.hex(),
        "start_frontier": [h.hex() for h in frontier],
        "created": format_ts(datetime.now(UTC)),
    }
    _write(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    _write(directory / "README.md", EXPORT_README)
    return directory


def _bad(kind: str, detail: str, seq: int | None = None) -> VerifyReport:
    return VerifyReport(
        ok=False,
        start=0,
        size=0,
        root=b"",
        chain_hash=b"",
        checkpoints_verified=0,
        damage=Damage(kind, seq, detail),
    )


def _manifest(directory: Path) -> dict[str, Any]:
    raw = (directory / "manifest.json").read_bytes()[: MAX_MANIFEST + 1]
    if len(raw) > MAX_MANIFEST:
        raise ValueError("manifest.json is too large")
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"manifest.json is not an {FORMAT} manifest")
    for k in ("from_seq", "to_seq"):
        if not isinstance(doc.get(k), int) or isinstance(doc.get(k), bool) or doc[k] < 0:
            raise ValueError(f"manifest {k} must be a non-negative integer")
    if doc["to_seq"] < doc["from_seq"]:
        raise ValueError("manifest to_seq precedes from_seq")
    front = doc.get("start_frontier")
    if not isinstance(front, list) or not all(isinstance(h, str) for h in front):
        raise ValueError("manifest start_frontier must be a list of hex hashes")
    return doc


def _vkeys(path: Path) -> list[NoteVerifier]:
    if not path.exists():
        return []
    return [NoteVerifier.from_vkey(x) for x in path.read_text("utf-8").split() if x.strip()]


def verify_export(
    directory: str | Path,
    *,
    log_key: NoteVerifier | None = None,
    witness_keys: Sequence[NoteVerifier] | None = None,
    extra_checkpoints: Sequence[str] = (),
    full: bool = True,
    progress: Callable[[int], None] | None = None,
    jobs: int | None = None,
    chunk_bytes: int | None = None,
) -> VerifyReport:
    """Verify an exported bundle offline; returns a report, never raises on bad files.

    Pass the log key and witness keys you trust; without them the bundle's own
    ``keys/`` are used and the report says so. ``jobs`` worker processes share the
    hashing (default: one a core, at most 8; 1 keeps it in this process); bundles
    under a few MB stay in this process anyway. ``chunk_bytes`` sets how much of
    entries.jsonl each worker takes at a time (tests make it small).
    """
    d = Path(directory)
    jobs = default_jobs() if jobs is None else jobs
    try:
        return _verify(
            d, log_key, witness_keys, extra_checkpoints, full, progress, jobs, chunk_bytes
        )
    except (OSError, ValueError, UnicodeError, AuditError, RecursionError) as exc:
        return _bad("bundle_invalid", f"the bundle cannot be read: {exc}")


def _verify(
    d: Path,
    log_key: NoteVerifier | None,
    witness_keys: Sequence[NoteVerifier] | None,
    extra: Sequence[str],
    full: bool,
    progress: Callable[[int], None] | None,
    jobs: int,
    chunk_bytes: int | None,
) -> VerifyReport:
    m = _manifest(d)
    start, end = int(m["from_seq"]), int(m["to_seq"])
    warnings: list[str] = []
    if log_key is None:
        bundled = _vkeys(d / "keys" / "log.vkey")
        log_key = bundled[0] if bundled else None
        warnings.append("log key taken from the bundle: compare it with the published key")
    if witness_keys is None:
        witness_keys = _vkeys(d / "keys" / "witnesses.vkeys")
        if witness_keys:
            warnings.append("witness keys taken from the bundle: compare with the published keys")
    notes: list[str] = list(extra)
    cp_dir = d / "checkpoints"
    if cp_dir.is_dir():
        notes += [p.read_text("utf-8") for p in sorted(cp_dir.glob("*.note"))]
    later: dict[int, bytes] = {}
    in_range: list[str] = []
    for note in notes:
        size = _note_size(note)
        if size is not None and size > end and log_key is not None:
            later[size] = verify_checkpoint(note, log_key).root
        elif size is None or size <= end:
            in_range.append(note)
    frontier = CompactRange(start, [bytes.fromhex(h) for h in m["start_frontier"]])
    v = ChainVerifier(
        start=start,
        prev_chain=bytes.fromhex(str(m.get("prev_chain_hash", ZERO_CHAIN.hex()))),
        frontier=frontier,
        checkpoints=in_range,
        log_key=log_key,
        witness_keys=witness_keys,
        full=full,
        progress=progress,
    )
    v.warnings.extend(warnings)
    _feed_lines(d, v, end, jobs, chunk_bytes)
    report = v.finish(head_size=end)
    if report.ok:
        _check_proofs(d, report, later, end)
    if not later:  # a later checkpoint, proved consistent, vouches for the whole range
        report.warn_unsigned()
    return report


def _note_size(note: str) -> int | None:
    lines = note.split("\n")
    if len(lines) > 2 and lines[1].isascii() and lines[1].isdigit():
        return int(lines[1])
    return None


_RUN = 4096


def _read_run(f: BinaryIO, count: int, limit: int) -> list[bytes] | None:
    """``count`` whole lines (newlines stripped) read in bulk, or None (file position
    unchanged) if the file ends first or a line is longer than ``limit``."""
    start = f.tell()
    size = count * 512
    while True:
        buf = f.read(size)
        parts = buf.split(b"\n", count)
        if len(parts) > count:
            lines = parts[:count]
            if lines and max(map(len, lines)) + 1 > limit:
                break
            f.seek(start + len(buf) - len(parts[count]))
            return lines
        if len(buf) < size or size >= count * limit:
            break
        f.seek(start)
        size *= 4
    f.seek(start)
    return None


def _feed_lines(d: Path, v: ChainVerifier, end: int, jobs: int, chunk_bytes: int | None) -> None:
    with open(d / "entries.jsonl", "rb") as fe, open(d / "hashes.txt", "rb") as fh:
        if jobs > 1:
            fe.seek(_feed_chunks(d, v, end, jobs, chunk_bytes))
            fh.seek(hashes_len(v.start, v.next))
        while v.next < end and v.damage is None:
            count = min(_RUN, end - v.next)
            at_e, at_h = fe.tell(), fh.tell()
            lines = _read_run(fe, count, MAX_ENTRY_BYTES + 2)
            if lines is not None and v.feed_run(lines, fh.read(hashes_len(v.next, v.next + count))):
                continue
            fe.seek(at_e)
            fh.seek(at_h)
            if not _feed_slowly(fe, fh, v, v.next + count):
                return
        if v.damage is None and fe.readline(1):
            v.fail("inserted", end, "entries.jsonl holds more entries than the manifest says")


def _feed_chunks(d: Path, v: ChainVerifier, end: int, jobs: int, chunk_bytes: int | None) -> int:
    """Check the entries in chunks on ``jobs`` processes, accepting their runs in
    order; returns the entries.jsonl offset just past the last run accepted (the
    caller goes on from there, entry by entry where something is off)."""
    spans = plan(d / "entries.jsonl", jobs, chunk_bytes)
    if len(spans) < 2:
        return 0
    chunks = [
        Chunk(
            str(d / "entries.jsonl"),
            str(d / "hashes.txt"),
            lo,
            hi,
            v.start,
            end,
            v.chain,
            v.checkpoint_sizes,
            v.full,
            BLOCK if chunk_bytes is None else max(1, min(BLOCK, chunk_bytes // 3)),
        )
        for lo, hi in spans
    ]
    done = 0
    with closing(run_chunks(chunks, jobs)) as results:
        for (_, hi), runs in zip(spans, results, strict=False):
            for stop, run in runs:
                if not v.accept_run(run):
                    return done
                done = stop
            if done != hi:
                break
    return done


def _feed_slowly(fe: BinaryIO, fh: BinaryIO, v: ChainVerifier, stop: int) -> bool:
    """One entry at a time, naming the first damage; False once damage is found or input ends."""
    while v.next < stop:
        line = fe.readline(MAX_ENTRY_BYTES + 2)
        if not line:
            return False
        hline = fh.readline(200)
        seq = v.next
        if not line.endswith(b"\n"):
            v.fail("malformed", seq, "entry line is cut short or too long")
            return False
        parts = hline.decode("ascii", "replace").split()
        try:
            stored_seq, leaf, chain = (
                int(parts[0]),
                bytes.fromhex(parts[1]),
                bytes.fromhex(parts[2]),
            )
        except (IndexError, ValueError):
            v.fail("malformed", seq, "hashes.txt line is missing or malformed")
            return False
        if not v.feed(line[:-1], stored_seq=stored_seq, stored_leaf=leaf, stored_chain=chain):
            return False
    return True


def _check_proofs(d: Path, report: VerifyReport, later: dict[int, bytes], end: int) -> None:
    pdir = d / "proofs"
    proofs = sorted(pdir.glob("consistency-*.json")) if pdir.is_dir() else []
    tied = False
    for p in proofs:
        proof = ConsistencyProof.from_json(json.loads(p.read_bytes()[:MAX_MANIFEST]))
        try:
            proof.verify()
        except AuditError as exc:
            report.ok = False
            report.damage = Damage("checkpoint_invalid", None, f"{p.name} does not verify: {exc}")
            return
        if proof.old_size == end and proof.new_size in later:
            if proof.old_root != report.root or proof.new_root != later[proof.new_size]:
                report.ok = False
                report.damage = Damage(
                    "checkpoint_mismatch",
                    report.start,
                    f"the range does not extend to the signed checkpoint of {proof.new_size}",
                    end=end,
                )
                return
            tied = True
            report.checkpoints_verified += 1
    if later and not tied:
        # A signed checkpoint beyond the range that nothing ties to the range is what
        # an export cut short behind a checkpoint (manifest edited, proofs dropped)
        # looks like: the entries in [end, checkpoint) cannot be shown to exist.
        first = min(later)
        report.ok = False
        report.damage = Damage(
            "truncated",
            end,
            f"no consistency proof ties the range to the signed checkpoint of {first} "
            "entries: entries after the range may have been cut off",
            end=first,
        )
