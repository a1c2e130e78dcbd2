"""Refuse U+0000 anywhere in a request (path, query or JSON body) at the edge.

Such a request gets 422 ``validation_failed`` on every store and changes nothing
(``gateway.nul_text`` says why). The body is read whole (``BodyLimit``, outside,
bounds it) and checked before the app sees any of it, then handed on as it came:
an error raised while the app reads would be taken by the framework's body
parsing for a malformed body. The exchange route's body is checked by the
exchange flow instead, so that its refusal carries an exchange id and is audited
like any other. A NUL in the exchange route's query is refused here, before the
flow reads anything (the token is not looked at, so not spent): like the 413 and
415 given before the flow, that answer carries a fresh exchange id that no audit
entry bears.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.problems import new_exchange_id, problem_response
from gateway.nul_text import has_nul_escape

__all__ = ["RefuseNul"]

EXCHANGE_PATH = "/v1/exchanges"


class RefuseNul:
    """422 for a request whose path, query or JSON body carries U+0000."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _refuse(scope, receive, send, "the path or query contains a NUL character")
            return
        if scope["path"] == EXCHANGE_PATH:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        if has_nul_escape(b"".join(m.get("body", b"") for m in messages)):
            await _refuse(scope, receive, send, "the body contains a NUL character (\\u0000)")
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    request = Request(scope)
    if scope["path"] == EXCHANGE_PATH and scope["method"] == "POST":
        request.state.exchange_id = new_exchange_id()  # every exchange answer has one
    response = problem_response(
        request, status=422, code="validation_failed", title="Invalid input", detail=detail
    )
    await response(scope, receive, send)
