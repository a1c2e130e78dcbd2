"""The optional C core (``audit._sha256``) hashes exactly as ``hashlib`` does, refuses
what is not bytes, and the verifier finds the same runs and the same damage with it
as with the pure-Python core it falls back to."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import _runs, verify_export
from audit._runs import HASHLIB, NATIVE, Core, check_run, leaf_hashes
from audit.entry import ZERO_CHAIN, chain_hash, seal
from audit.merkle import leaf_hash
from tests.audit.conftest import entry
from tests.audit.tamper_support import SETTINGS, Base, N, _rewrite, names

#: ``scripts/test`` (and CI) sets this and installs the build's prerequisites: there
#: nothing below may skip, and a missing build fails. Elsewhere (a machine without a
#: C compiler) Accord runs on the hashlib core, and the native-only tests skip.
REQUIRED = os.environ.get("ACCORD_REQUIRE_NATIVE") == "1"
SKIP_NATIVE = NATIVE is None and not REQUIRED
needs_native = pytest.mark.skipif(
    SKIP_NATIVE, reason="audit._sha256 was not built (no C compiler or OpenSSL headers)"
)


def _sha(prefix: bytes, m: bytes) -> bytes:
    return hashlib.sha256(prefix + m).digest()


@contextmanager
def _using(core: Core) -> Iterator[None]:
    """Run the bulk checks of this process on ``core`` (hypothesis tests, where a
    function-scoped monkeypatch would span every example)."""
    saved, _runs.core = _runs.core, core
    try:
        yield
    finally:
        _runs.core = saved


def test_the_native_core_is_used_when_built_and_built_when_required() -> None:
    """``scripts/test`` sets ACCORD_REQUIRE_NATIVE=1: there, a missing build fails."""
    if REQUIRED:
        import audit._sha256  # noqa: F401  (raises if the extension was not built)
    assert _runs.NATIVE_SHA256 is (NATIVE is not None)
    assert _runs.core is (NATIVE if NATIVE is not None else HASHLIB)


# -- the extension against hashlib -------------------------------------------


@needs_native
@settings(max_examples=300, deadline=None)
@given(prefix=st.binary(max_size=130), messages=st.lists(st.binary(max_size=300), max_size=40))
def test_each_is_hashlib_of_prefix_and_message(prefix: bytes, messages: list[bytes]) -> None:
    assert NATIVE is not None
    want = [_sha(prefix, m) for m in messages]
    assert NATIVE.each(prefix, messages) == want
    assert NATIVE.each(prefix, tuple(messages)) == want
    assert HASHLIB.each(prefix, messages) == want


@needs_native
@settings(max_examples=300, deadline=None)
@given(prefix=st.binary(max_size=70), width=st.integers(1, 200), count=st.integers(0, 30))
def test_strided_is_hashlib_of_each_slice(prefix: bytes, width: int, count: int) -> None:
    assert NATIVE is not None
    blob = os.urandom(width * count)
    want = [_sha(prefix, blob[i : i + width]) for i in range(0, len(blob), width)]
    assert NATIVE.strided(prefix, blob, width) == want
    assert HASHLIB.strided(prefix, blob, width) == want


@needs_native
@pytest.mark.parametrize(
    "size", [0, 1, 55, 56, 63, 64, 65, 119, 120, 16383, 16384, 65536, 65537, 1 << 20]
)
def test_messages_at_block_padding_and_gil_edges(size: int) -> None:
    """Lengths where SHA-256 padding spills into one more block, and batches either side
    of the size from which the GIL is given up."""
    assert NATIVE is not None
    m = os.urandom(size)
    assert NATIVE.each(b"\x00", [m, m[: size // 2]]) == [
        _sha(b"\x00", m),
        _sha(b"\x00", m[: size // 2]),
    ]
    if size:
        assert NATIVE.strided(b"\x01", m, size) == [_sha(b"\x01", m)]


@needs_native
def test_empty_batches_and_whole_blob_widths() -> None:
    assert NATIVE is not None
    assert NATIVE.each(b"\x00", []) == []
    assert NATIVE.each(b"", [b""]) == [hashlib.sha256().digest()]
    assert NATIVE.strided(b"\x01", b"", 64) == []
    assert NATIVE.strided(b"", b"", 1 << 40) == []
    assert NATIVE.strided(b"", b"abc", 1) == [_sha(b"", c) for c in (b"a", b"b", b"c")]
    assert NATIVE.strided(b"p", b"abc", 3) == [_sha(b"p", b"abc")]


@needs_native
@pytest.mark.parametrize(
    ("blob", "width"), [(b"abc", 2), (b"abc", 4), (b"ab", 0), (b"ab", -1), (b"", 0), (b"", -64)]
)
def test_a_blob_the_slices_do_not_tile_is_refused(blob: bytes, width: int) -> None:
    assert NATIVE is not None
    for core in (NATIVE, HASHLIB):
        with pytest.raises(ValueError):
            core.strided(b"", blob, width)


@needs_native
@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.each("\x00", [b"a"]),
        lambda s: s.each(bytearray(b"\x00"), [b"a"]),
        lambda s: s.each(None, [b"a"]),
        lambda s: s.each(b"", [b"a", "b"]),
        lambda s: s.each(b"", [bytearray(b"a")]),
        lambda s: s.each(b"", [memoryview(b"a")]),
        lambda s: s.each(b"", b"ab"),  # its items are ints
        lambda s: s.each(b"", 7),
        lambda s: s.each(b""),
        lambda s: s.each(b"", [], []),
        lambda s: s.strided(b"", bytearray(64), 64),
        lambda s: s.strided(b"", memoryview(bytes(64)), 64),
        lambda s: s.strided(b"", "x" * 64, 64),
        lambda s: s.strided(b"", bytes(64), 64.0),
        lambda s: s.strided(b"", bytes(64), "64"),
        lambda s: s.strided(b"", bytes(64)),
        lambda s: s.strided(1, bytes(64), 64),
    ],
)
def test_anything_but_bytes_is_a_type_error(call: Callable[[Any], object]) -> None:
    import audit._sha256 as native

    with pytest.raises(TypeError):
        call(native)


@needs_native
def test_each_names_the_message_that_is_not_bytes() -> None:
    import audit._sha256 as native

    with pytest.raises(TypeError, match="message 2 must be bytes, not str"):
        native.each(b"", [b"a", b"b", "c"])


@needs_native
def test_a_list_changed_while_it_is_hashed_cannot_pull_a_message_away() -> None:
    """Hashing a big batch gives up the GIL; another thread swapping the list's items
    meanwhile frees the old ones. Every digest is still of one version of its item."""
    assert NATIVE is not None
    olds = [os.urandom(4096) for _ in range(64)]
    news = [os.urandom(4096) for _ in range(64)]
    want = [{_sha(b"", a), _sha(b"", b)} for a, b in zip(olds, news, strict=True)]
    items = list(olds)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for i in range(len(items)):
                # a fresh copy each time: the one replaced loses its last reference
                items[i] = bytes(bytearray(news[i] if items[i] == olds[i] else olds[i]))

    t = threading.Thread(target=swap)
    t.start()
    try:
        for _ in range(200):
            got = NATIVE.each(b"", items)
            assert all(g in w for g, w in zip(got, want, strict=True))
    finally:
        stop.set()
        t.join()


# -- the bulk checks with either core ------------------------------------------


@dataclass
class _Rows:
    lines: list[bytes]
    region: bytes  # hashes.txt lines of the seqs
    anchor: bytes


def _hashes_txt(lines: list[bytes]) -> str:
    chain, rows = ZERO_CHAIN, []
    for i, data in enumerate(lines):
        chain = chain_hash(chain, leaf_hash(data))
        rows.append(f"{i} {leaf_hash(data).hex()} {chain.hex()}\n")
    return "".join(rows)


def _rows(first: int, n: int) -> _Rows:
    ts = "2026-06-01T12:00:00.000Z"
    lines = [seal(entry(i), seq=i, ts=ts, node="t") for i in range(first + n)]
    rows = _hashes_txt(lines).splitlines(keepends=True)
    anchor = bytes.fromhex(rows[first - 1].split()[2]) if first else ZERO_CHAIN
    return _Rows(lines[first:], "".join(rows[first:]).encode(), anchor)


@needs_native
@settings(max_examples=60, deadline=None)
@given(
    first=st.integers(0, 40),
    n=st.integers(1, 70),
    tamper=st.one_of(st.none(), st.integers(0, 10**6)),
    full=st.booleans(),
)
def test_both_cores_find_the_same_run(first: int, n: int, tamper: int | None, full: bool) -> None:
    rows = _rows(first, n)
    region = bytearray(rows.region)
    if tamper is not None:  # one hex digit of a hash changed
        line = tamper % n
        at = sum(map(len, rows.region.splitlines(keepends=True)[:line]))
        at += len(str(first + line)) + 1 + (tamper >> 8) % 129
        if region[at : at + 1] != b" ":
            region[at] = ord("0") if region[at] != ord("0") else ord("1")
    sizes = range(first, first + n + 2, 3)
    runs = []
    for core in (NATIVE, HASHLIB):
        assert core is not None
        with _using(core):
            leaves = leaf_hashes([rows.lines], first, full)
            assert leaves == [leaf_hash(x) for x in rows.lines]
            runs.append(check_run(leaves, rows.lines[-1], bytes(region), first, rows.anchor, sizes))
    assert runs[0] == runs[1]
    assert (runs[0] is None) == (bytes(region) != rows.region)


# -- verify an export with either core ------------------------------------------


def _counting(core: Core, calls: list[str]) -> Core:
    def each(prefix: bytes, messages: Any) -> list[bytes]:
        calls.append("each")
        return core.each(prefix, messages)

    def strided(prefix: bytes, blob: bytes, width: int) -> list[bytes]:
        calls.append("strided")
        return core.strided(prefix, blob, width)

    return Core(core.name, each, strided)


@pytest.fixture(params=["native", "hashlib"])
def core_calls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every bulk check in this process runs on the core named by the param; the list
    records its batch calls, so a test can tell the bulk path really ran on it."""
    core = NATIVE if request.param == "native" else HASHLIB
    if core is None and SKIP_NATIVE:
        pytest.skip("audit._sha256 was not built (no C compiler or OpenSSL headers)")
    assert core is not None, "ACCORD_REQUIRE_NATIVE=1 but audit._sha256 was not built"
    made: list[str] = []
    monkeypatch.setattr(_runs, "core", _counting(core, made))
    return made


def _bundle(base: Base, tmp_path: Path) -> tuple[Path, list[bytes]]:
    d = tmp_path / "bundle"
    shutil.copytree(base.export, d)
    return d, (d / "entries.jsonl").read_bytes().split(b"\n")[:-1]


def _verify(base: Base, d: Path) -> Any:
    return verify_export(
        d,
        log_key=base.log_key,
        witness_keys=[base.witness_key],
        extra_checkpoints=base.witnessed,
        jobs=1,
    )


def test_an_untouched_export_verifies_on_either_core(
    base: Base, tmp_path: Path, core_calls: list[str]
) -> None:
    d, _ = _bundle(base, tmp_path)
    report = _verify(base, d)
    assert report.ok and report.size == N and not report.warnings, report.to_json()
    assert {"each", "strided"} <= set(core_calls)


@pytest.mark.parametrize("k", [0, 1, 17, N - 1])
def test_a_changed_entry_is_named_on_either_core(
    base: Base, tmp_path: Path, core_calls: list[str], k: int
) -> None:
    d, lines = _bundle(base, tmp_path)
    lines = _rewrite(lines, k)  # still a canonical, schema-valid entry with its seq
    (d / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    names(_verify(base, d), k, "entry_changed")
    assert "each" in core_calls


@SETTINGS
@given(k=st.integers(0, N - 1))
def test_a_rehashed_chain_is_named_on_either_core(
    base: Base, tmp_path_factory: pytest.TempPathFactory, k: int
) -> None:
    """A forger who rewrites one entry and every stored hash after it still fails the
    witnessed checkpoints, at the same place whichever core hashes."""
    reports = []
    for core in (NATIVE, HASHLIB):
        if core is None:
            continue
        d, lines = _bundle(base, tmp_path_factory.mktemp("rehash"))
        lines = _rewrite(lines, k)
        (d / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
        (d / "hashes.txt").write_text(_hashes_txt(lines))
        with _using(core):
            report = _verify(base, d)
        names(report, k, "checkpoint_mismatch")
        reports.append(report.to_json())
    assert len(set(map(str, reports))) == 1
