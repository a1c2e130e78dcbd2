"""The baseline for the exchange benchmark: a bare pass-through proxy, no security.

``python -m bench._exchange_proxy --port N`` serves ``POST /v1/exchanges`` with
the same JSON body a department sends Accord, forwards it as one pooled
``httpx`` GET to the civil registry (``BENCH_UPSTREAM``, bearer
``BENCH_UPSTREAM_TOKEN``), and returns the upstream JSON re-serialised. The
same server stack as the gateway (FastAPI under uvicorn, as many worker
processes as the gateway gets), none
of the work: no token, no policy, no mapping, no release, no audit.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

__all__ = ["FIELDS", "create_app"]

#: The source fields the civil registry connector pushes down for the demo agreement.
FIELDS = "ssn,name,dob,civil_status,residence"


def create_app(upstream: str, token: str) -> FastAPI:
    client: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        client["c"] = httpx.AsyncClient(
            base_url=upstream,
            headers={"Authorization": f"Bearer {token}"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        try:
            yield
        finally:
            await client["c"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/exchanges")
    async def exchange(request: Request) -> JSONResponse:
        body: dict[str, Any] = json.loads(await request.body())
        subject = body["query"]["subject"]
        r = await client["c"].get(f"/api/v2/citizens/{subject}", params={"fields": FIELDS})
        return JSONResponse({"result": {"records": [r.json()]}}, status_code=r.status_code)

    return app


def app_from_env() -> FastAPI:
    """The app factory the workers call (``BENCH_UPSTREAM``, ``BENCH_UPSTREAM_TOKEN``)."""
    return create_app(os.environ["BENCH_UPSTREAM"], os.environ["BENCH_UPSTREAM_TOKEN"])


def main() -> None:
    from gateway.serving import serve

    ap = argparse.ArgumentParser(prog="python -m bench._exchange_proxy")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    # The same serving code as ``accord serve``: one process, or several on one port.
    serve(
        "bench._exchange_proxy:app_from_env", host="127.0.0.1", port=args.port, workers=args.workers
    )


if __name__ == "__main__":
    main()
