"""The log's side of c2sp.org/tlog-witness: submit checkpoints, record cosignatures.

The log does not know what each witness last saw, so it starts from the size it
last sent that witness (or 0); a ``409`` answer carries the witness's size and the
log retries once with a consistency proof from there.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx

from audit.errors import AuditError
from audit.note import parse_note

if TYPE_CHECKING:
    from audit.log import AuditLog

__all__ = ["submit_checkpoint"]

_last_sent: dict[tuple[str, str], int] = {}


def _body(log: AuditLog, old: int, size: int, note: str) -> bytes:
    proof = log.consistency_proof(old, size).hashes if 0 < old < size else ()
    lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + note).encode()


def submit_checkpoint(log: AuditLog, urls: Sequence[str], timeout: float = 10.0) -> dict[str, str]:
    note = log.latest_checkpoint()
    if note is None:
        note = log.checkpoint()
    parsed = parse_note(note)
    origin, size = parsed.text.split("\n")[0], int(parsed.text.split("\n")[1])
    results: dict[str, str] = {}
    with httpx.Client(timeout=timeout) as client:
        for url in urls:
            results[url] = _submit_one(log, client, url.rstrip("/"), origin, size, note)
    return results


def _submit_one(
    log: AuditLog, client: httpx.Client, url: str, origin: str, size: int, note: str
) -> str:
    old = _last_sent.get((url, origin), 0)
    try:
        for _ in range(2):
            if old > size:
                return f"refused: the witness has seen {old} entries, more than this log's {size}"
            r = client.post(url + "/add-checkpoint", content=_body(log, old, size, note))
            if r.status_code == 409 and r.headers.get("content-type", "").startswith(
                "text/x.tlog.size"
            ):
                try:
                    old = int(r.text.strip())
                except ValueError:
                    return "refused: unreadable 409 answer"
                continue
            if r.status_code != 200:
                return f"refused: HTTP {r.status_code} {r.text.strip()[:200]}"
            lines = [ln + "\n" for ln in r.text.split("\n") if ln.strip()]
            names = log.record_cosignatures(note, lines)
            _last_sent[(url, origin)] = size
            return "cosigned by " + ", ".join(names) if names else "refused: no trusted cosignature"
        return "refused: the witness keeps a different size"
    except httpx.HTTPError as exc:
        return f"unreachable: {exc.__class__.__name__}"
    except AuditError as exc:
        return f"refused: {exc.detail}"
