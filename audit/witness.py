"""A small witness (c2sp.org/tlog-witness) for Accord logs, run with ``accord audit witness``.

It remembers the last checkpoint it cosigned for each log origin (in SQLite),
checks the log's signature and the RFC 9162 consistency proof from that
checkpoint, refuses anything that is not an extension, and returns an Ed25519
``cosignature/v1`` line. Run it somewhere the log operator does not control: its
value is that the operator cannot take back what the witness has seen.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from audit.checkpoint import Cosigner, parse_checkpoint
from audit.errors import AuditError, ProofError
from audit.merkle import verify_consistency
from audit.note import NoteVerifier, open_note, parse_note

__all__ = ["Response", "Witness", "make_server"]

log = logging.getLogger("audit.witness")

MAX_BODY = 1 << 16


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: str


def _text(status: int, msg: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", msg + "\n")


class Witness:
    """Witness state and the add-checkpoint rules, independent of HTTP."""

    def __init__(self, cosigner: Cosigner, logs: Sequence[NoteVerifier], state: Path) -> None:
        self.cosigner = cosigner
        self.logs = {v.name: v for v in logs}
        self._db_path = str(state)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS witnessed (origin TEXT PRIMARY KEY, size INTEGER "
                "NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL, ts INTEGER NOT NULL)"
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def latest(self, origin: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT note FROM witnessed WHERE origin = ?", (origin,)).fetchone()
        return None if row is None else str(row[0])

    def add_checkpoint(self, body: bytes, now: int | None = None) -> Response:
        """Handle one ``POST /add-checkpoint`` body (c2sp.org/tlog-witness)."""
        if len(body) > MAX_BODY:
            return _text(400, "request too large")
        try:
            text = body.decode("utf-8")
            old, proof, note = _parse_request(text)
            parsed = parse_note(note)
            cp = parse_checkpoint(parsed.text)
        except (UnicodeDecodeError, ValueError, AuditError) as exc:
            return _text(400, f"malformed request: {exc}")
        key = self.logs.get(cp.origin)
        if key is None:
            return _text(404, "unknown log origin")
        try:
            open_note(note, [key])
        except AuditError:
            return _text(403, "no trusted log signature on the checkpoint")
        if old > cp.size:
            return _text(400, "old size is larger than the checkpoint size")
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT size, root FROM witnessed WHERE origin = ?", (cp.origin,)
                ).fetchone()
                have_size, have_root = (int(row[0]), bytes(row[1])) if row else (0, b"")
                if old != have_size:
                    db.execute("ROLLBACK")
                    return Response(409, "text/x.tlog.size", f"{have_size}\n")
                if old == cp.size and row is not None and have_root != cp.root:
                    db.execute("ROLLBACK")
                    log.warning("log %s equivocated at size %d", cp.origin, cp.size)
                    return _text(409, "same size, different root: the log forked")
                if old == 0 and proof:
                    db.execute("ROLLBACK")
                    return _text(422, "a proof from size 0 must be empty")
                if 0 < old < cp.size:
                    try:
                        verify_consistency(old, cp.size, have_root, cp.root, proof)
                    except ProofError as exc:
                        db.execute("ROLLBACK")
                        log.warning("log %s sent a bad consistency proof: %s", cp.origin, exc)
                        return _text(422, f"consistency proof does not verify: {exc}")
                ts = int(time.time()) if now is None else now
                sig = self.cosigner.cosign(parsed.text, ts)
                stored = parsed.with_signature(sig).render()
                db.execute(
                    "INSERT INTO witnessed (origin, size, root, note, ts) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(origin) DO UPDATE SET size = excluded.size, "
                    "root = excluded.root, note = excluded.note, ts = excluded.ts",
                    (cp.origin, cp.size, cp.root, stored, ts),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return Response(200, "text/x.tlog.signature", sig.line())


def _parse_request(text: str) -> tuple[int, list[bytes], str]:
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueError("no blank line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old "):
        raise ValueError("first line must be 'old <size>'")
    size_s = first[4:]
    if not size_s.isascii() or not size_s.isdigit() or str(int(size_s)) != size_s:
        raise ValueError("old size is not a canonical decimal")
    if len(lines) - 1 > 63:
        raise ValueError("too many proof lines")
    proof: list[bytes] = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error as exc:
            raise ValueError("proof line is not base64") from exc
        if len(h) != 32:
            raise ValueError("proof hash is not 32 bytes")
        proof.append(h)
    return int(size_s), proof, note


def make_server(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``witness``: POST /add-checkpoint, GET /vkey, GET /checkpoint?origin=."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "accord-witness/1"

        def _send(self, r: Response) -> None:
            data = r.body.encode()
            self.send_response(r.status)
            self.send_header("Content-Type", r.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/add-checkpoint":
                self._send(_text(404, "not found"))
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self._send(_text(400, "bad or missing Content-Length"))
                return
            try:
                self._send(witness.add_checkpoint(self.rfile.read(length)))
            except Exception:
                log.exception("witness failed")
                self._send(_text(500, "internal error"))

        def do_GET(self) -> None:
            if self.path == "/vkey":
                self._send(Response(200, "text/plain", witness.cosigner.verifier().vkey() + "\n"))
                return
            if self.path.startswith("/checkpoint?origin="):
                from urllib.parse import unquote

                note = witness.latest(unquote(self.path.split("=", 1)[1]))
                if note is None:
                    self._send(_text(404, "no checkpoint for that origin"))
                else:
                    self._send(Response(200, "text/plain; charset=utf-8", note))
                return
            self._send(_text(404, "not found"))

        def log_message(self, format: str, *args: object) -> None:
            log.info("%s " + format, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)
