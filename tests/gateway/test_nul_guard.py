"""The NUL guard: U+0000 anywhere in a request is refused at the edge (422), and only
a real ``\\u0000`` escape counts, wherever the body's chunks split it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.nul_guard import RefuseNul
from gateway.nul_text import has_nul_escape


@given(st.text())
def test_an_escape_counts_exactly_when_the_text_holds_a_nul(text: str) -> None:
    assert has_nul_escape(json.dumps(text).encode()) == ("\x00" in text)


def _call(path: str, query: bytes, chunks: list[bytes]) -> tuple[int, bytes, bytes]:
    """Run ``RefuseNul`` around an app that echoes the body; (status, body, echo)."""
    seen = bytearray()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(RefuseNul(app)(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, bytes(seen)


@pytest.mark.parametrize(
    ("path", "query"),
    [("/v1/departments/\x00", b""), ("/v1/agreements", b"department=%00"), ("/x", b"a=b%00c")],
)
def test_a_nul_in_the_path_or_query_is_refused(path: str, query: bytes) -> None:
    status, body, _ = _call(path, query, [b""])
    assert status == 422
    assert json.loads(body)["code"] == "validation_failed"


@pytest.mark.parametrize("split", range(1, 8))
def test_a_nul_escape_split_between_chunks_is_refused(split: int) -> None:
    doc = json.dumps({"name": "a\x00b"}).encode()
    at = doc.index(b"\\u0000") + split - 1
    status, body, _ = _call("/v1/departments", b"", [doc[:at], doc[at:]])
    assert status == 422
    assert "NUL" in json.loads(body)["detail"]


def test_text_that_only_looks_like_an_escape_passes() -> None:
    doc = json.dumps({"note": "a literal \\u0000 and %00"}).encode()
    status, body, echoed = _call("/v1/departments", b"q=%2500", [doc])
    assert (status, body, echoed) == (200, b"ok", doc)


def test_a_value_the_store_refuses_is_invalid_input_not_a_fault() -> None:
    """The backstop behind the checks: SQLSTATE class 22 from the database is 422."""
    import httpx
    from fastapi import FastAPI
    from sqlalchemy.exc import DataError

    from gateway.api.problems import install_problem_handlers

    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/refused")
    def refused() -> None:
        raise DataError("INSERT ...", {}, ValueError("value too long for type"))

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/refused")

    r = asyncio.run(get())
    assert r.status_code == 422
    assert r.json()["code"] == "validation_failed"
