"""Agreement changes refused before their route ran, into the audit log.

The agreement service audits every submission, draft or status change
(``transition``) it refuses (``gateway.agreements.refusals``). A body refused
before the route runs never reaches it: too large (413) or too slow (408,
``BodyLimit``), carrying a NUL (422, ``RefuseNul``), not JSON (400
``malformed_json``, ``bad_request``) or not the shape the route takes (422
``validation_failed``). On the two submission routes and the status route
only, this hashes and counts the body as it arrives and, when the answer
is such a refusal, appends the same ``agreement_change`` entry (``outcome``
``refused``) before the answer leaves: the code, the status, the person
``StaffAuthFirst`` verified, the body's SHA-256 and size, never the body.
Every other request passes straight through, untouched.
"""

from __future__ import annotations

import hashlib
import json
import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.agreements.refusals import unread_refusal_entry
from gateway.auth.humans import Principal
from gateway.log import get_logger

__all__ = ["AuditUnreadSubmissions", "mark_received"]

log = get_logger(__name__)

#: The submission routes (``POST``) and the kind of submission each takes.
SUBMISSIONS = {"/v1/agreements": "signed", "/v1/agreements/drafts": "draft"}
#: The route changing a version's status (``POST``): a ``transition``.
TRANSITION = re.compile(r"/v1/agreements/[^/]+/versions/[^/]+/status")
#: Set in the request's state by the route once it holds the parsed body: from
#: then on the agreement service audits whatever it refuses.
_RECEIVED = "agreement_submission_received"


def mark_received(request: Request) -> None:
    """Say that the route runs: its refusals are the agreement service's to audit."""
    setattr(request.state, _RECEIVED, True)


class _Body:
    """The request body as it arrives: hashed and counted, never kept."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.whole = False

    def take(self, message: Message) -> None:
        chunk = message.get("body", b"")
        self.digest.update(chunk)
        self.size += len(chunk)
        self.whole = not message.get("more_body", False)


class AuditUnreadSubmissions:
    """Audits a refused agreement change that its route never saw."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = _kind(scope["path"]) if scope["type"] == "http" else None
        if kind is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = _Body()
        held: list[Message] = []
        status = 0

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.take(message)
            return message

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if _unread_refusal(scope, status):
                    held.append(message)
                    return
            if not held:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                await self._record(scope, kind, status, body, held)
                for answer in held:
                    await send(answer)
                held.clear()

        await self.app(scope, counted, watched)

    @staticmethod
    async def _record(
        scope: Scope, kind: str, status: int, body: _Body, answer: list[Message]
    ) -> None:
        who = scope.get("state", {}).get("verified_principal")  # by StaffAuthFirst
        code = _code(answer)
        entry = unread_refusal_entry(
            actor=who.actor if isinstance(who, Principal) else "anonymous",
            kind=kind,
            status=status,
            code=code,
            body_sha256=body.digest.hexdigest() if body.whole else None,
            body_bytes=body.size,
        )
        try:  # the refusal is answered either way; if unrecorded, the log says so
            await scope["app"].state.services.exchange.refusals.record(entry, refused=code)
        except Exception as failure:
            log.error("agreement_refusal_unaudited", code=code, error=type(failure).__name__)


def _kind(path: str) -> str | None:
    """The kind of change ``path`` submits, if it is one of these routes."""
    return SUBMISSIONS.get(path) or ("transition" if TRANSITION.fullmatch(path) else None)


def _unread_refusal(scope: Scope, status: int) -> bool:
    """A refusal given before the route ran (401 and 403 are ``StaffAuthFirst``'s,
    audited there)."""
    refused = 400 <= status < 500 and status not in (401, 403)
    return refused and not scope.get("state", {}).get(_RECEIVED, False)


def _code(answer: list[Message]) -> str:
    """The problem ``code`` of a held answer (``http_error`` if it has none)."""
    data = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    try:
        code = json.loads(data).get("code")
    except (ValueError, AttributeError):
        return "http_error"
    return code[:64] if isinstance(code, str) and code else "http_error"
