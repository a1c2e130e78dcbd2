"""A deliberately misbehaving department system for the hostile-system tests.

Run as ``python -m tests.connectors.hostile_server --port N``. Each route
misbehaves in one way (slow, endless, oversized, wrong type, XXE, entity
bomb, flaky 503s…) and counts its hits so tests can see retries happen.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import ssl
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

HITS: Counter[str] = Counter()
INFLIGHT = {"now": 0, "max": 0}
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS = "urn:example:tax-authority:v1"

GOOD = {
    "ssn": "12345678901",
    "name": {"first": "Ada", "last": "Lovelace"},
    "dob": "10/12/1815",
    "gender": "F",
    "civil_status": "M",
    "residence": {"street": "1 Mill Lane", "city": "Northbridge", "zip": "1012 AB"},
    "household_ref": "HH000001",
    "registered_at": "2020-01-01T00:00:00+0000",
}


def _tax(body: str, extra_head: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?>{extra_head}<soap:Envelope xmlns:soap="{SOAP}" '
        f'xmlns:t="{NS}"><soap:Body>{body}</soap:Body></soap:Envelope>'
    ).encode()


TAX_OK = (
    "<t:GetTaxStatusResponse><t:TaxStatus><t:TaxpayerId>12345678901</t:TaxpayerId>"
    "<t:FullName>X, Y</t:FullName><t:FilingStatus>S</t:FilingStatus>"
    "<t:Residency>R</t:Residency><t:LastAssessmentYear>2024</t:LastAssessmentYear>"
    "<t:AssessedIncome>10.00</t:AssessedIncome><t:Compliance>GOOD</t:Compliance>"
    "<t:LastFilingDate>20250101</t:LastFilingDate></t:TaxStatus></t:GetTaxStatusResponse>"
)


async def rest(request: Request) -> Response:
    mode = request.path_params["mode"]
    HITS[mode] += 1
    if mode != "busy":
        return await _rest(mode, request)
    INFLIGHT["now"] += 1
    INFLIGHT["max"] = max(INFLIGHT["max"], INFLIGHT["now"])
    try:
        return await _rest(mode, request)
    finally:
        INFLIGHT["now"] -= 1


async def _rest(mode: str, request: Request) -> Response:
    if mode == "good":
        return JSONResponse(GOOD)
    if mode == "busy":
        await asyncio.sleep(0.2)
        return JSONResponse(GOOD)
    if mode == "slow":
        await asyncio.sleep(30)
        return JSONResponse(GOOD)
    if mode == "trickle":

        async def drip():  # type: ignore[no-untyped-def]
            yield b'{"ssn": "'
            for _ in range(600):
                await asyncio.sleep(0.05)
                yield b"1"

        return StreamingResponse(drip(), media_type="application/json")
    if mode == "endless":

        async def flood():  # type: ignore[no-untyped-def]
            yield b'{"ssn": "'
            while True:
                yield b"A" * 65536
                await asyncio.sleep(0)

        return StreamingResponse(flood(), media_type="application/json")
    if mode == "huge":
        return Response(b"{" + b" " * (3 * 1024 * 1024) + b"}", media_type="application/json")
    if mode == "gzipbomb":
        body = gzip.compress(b'{"x": "' + b"0" * (20 * 1024 * 1024) + b'"}')
        return Response(body, media_type="application/json", headers={"Content-Encoding": "gzip"})
    if mode == "html":
        return Response("<html><body>maintenance</body></html>", media_type="text/html")
    if mode == "badjson":
        return Response(b'{"ssn": "1234', media_type="application/json")
    if mode == "nan":
        return Response(b'{"ssn": NaN}', media_type="application/json")
    if mode == "deep":
        return Response(b"[" * 100_000 + b"]" * 100_000, media_type="application/json")
    if mode == "array":
        return JSONResponse([GOOD])
    if mode == "unknown_code":
        return JSONResponse({**GOOD, "gender": "Q"})
    if mode == "malformed":
        return JSONResponse({**GOOD, "dob": "1815-12-10", "ssn": 12345})
    if mode == "always503":
        return Response(status_code=503)
    if mode == "flaky":
        if HITS[mode] % 3:
            return Response(status_code=503)
        return JSONResponse(GOOD)
    if mode == "ratelimited":
        if HITS[mode] % 2:
            return Response(status_code=429, headers={"Retry-After": "0"})
        return JSONResponse(GOOD)
    if mode == "ratelimited_long":
        return Response(status_code=429, headers={"Retry-After": "120"})
    if mode == "ratelimited_bare":
        return Response(status_code=429)
    if mode == "plain_json":
        return Response(json.dumps(GOOD).encode(), media_type="text/plain")
    if mode == "no_type":
        return Response(json.dumps(GOOD).encode(), headers={"content-type": ""})
    if mode == "lying_length":
        return Response(
            b"{}", media_type="application/json", headers={"Content-Length": str(10**12)}
        )
    if mode == "flaky502":
        if HITS[mode] % 2:
            return Response(status_code=502)
        return JSONResponse(GOOD)
    if mode == "gateway_timeout":
        return Response(status_code=504)
    if mode == "page_mixed":
        return JSONResponse({"items": [GOOD, "not an object", GOOD], "next": None})
    if mode == "page_no_items":
        return JSONResponse({"records": [GOOD]})
    if mode == "page_bad_cursor":
        return JSONResponse({"items": [GOOD], "next": {"offset": 1}})
    if mode == "error500":
        return Response(status_code=500)
    if mode == "unauthorised":
        return Response(status_code=401)
    if mode == "redirect":
        return Response(status_code=302, headers={"Location": "http://169.254.169.254/"})
    return Response(status_code=404)


async def hits(request: Request) -> Response:
    return JSONResponse({"hits": dict(HITS), "max_inflight": INFLIGHT["max"]})


async def reset(request: Request) -> Response:
    HITS.clear()
    INFLIGHT["max"] = 0
    return JSONResponse({})


BOMB = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
    '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
)
XXE = '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'


async def soap(request: Request) -> Response:
    mode = request.path_params["mode"]
    HITS["soap_" + mode] += 1
    await request.body()
    xml = "text/xml; charset=utf-8"
    if mode == "good":
        return Response(_tax(TAX_OK), media_type=xml)
    if mode == "xxe":
        body = TAX_OK.replace("X, Y", "&xxe;")
        return Response(b'<?xml version="1.0"?>' + XXE.encode() + _tax(body)[21:], media_type=xml)
    if mode == "bomb":
        body = TAX_OK.replace("X, Y", "&lol4;")
        return Response(b'<?xml version="1.0"?>' + BOMB.encode() + _tax(body)[21:], media_type=xml)
    if mode == "fault":
        fault = (
            "<soap:Fault><faultcode>soap:Server</faultcode>"
            "<faultstring>boom</faultstring></soap:Fault>"
        )
        return Response(_tax(fault), status_code=500, media_type=xml)
    if mode == "notfound":
        fault = (
            "<soap:Fault><faultcode>soap:Client.NotFound</faultcode>"
            "<faultstring>no</faultstring></soap:Fault>"
        )
        return Response(_tax(fault), status_code=500, media_type=xml)
    if mode == "garbage":
        return Response(b"<soap:Envelope><unclosed>", media_type=xml)
    if mode == "wrongshape":
        return Response(_tax("<t:Other><t:Thing>1</t:Thing></t:Other>"), media_type=xml)
    if mode == "html":
        return Response(b"<html/>", media_type="text/html")
    if mode == "huge":
        pad = "<!--" + "x" * (2 * 1024 * 1024) + "-->"
        return Response(_tax(TAX_OK + pad), media_type=xml)
    if mode == "slow":
        await asyncio.sleep(30)
        return Response(_tax(TAX_OK), media_type=xml)
    if mode == "trickle":

        async def drip():  # type: ignore[no-untyped-def]
            yield _tax(TAX_OK)[:60]
            for _ in range(600):
                await asyncio.sleep(0.05)
                yield b" "

        return StreamingResponse(drip(), media_type=xml)
    if mode == "endless":

        async def flood():  # type: ignore[no-untyped-def]
            yield _tax("")[: -len("</soap:Body></soap:Envelope>")]
            while True:
                yield b"<!--" + b"x" * 65536 + b"-->"
                await asyncio.sleep(0)

        return StreamingResponse(flood(), media_type=xml)
    if mode == "xxe_late":
        # The DOCTYPE hides behind 8 KiB of comments and declares no entity inline.
        late = "<!--" + "x" * 8192 + "-->" + '<!DOCTYPE e SYSTEM "http://169.254.169.254/x.dtd">'
        return Response(
            b'<?xml version="1.0"?>' + late.encode() + _tax(TAX_OK)[21:], media_type=xml
        )
    if mode == "param_entity":
        head = '<!DOCTYPE e [<!ENTITY % ext SYSTEM "http://169.254.169.254/evil.dtd"> %ext;]>'
        return Response(
            b'<?xml version="1.0"?>' + head.encode() + _tax(TAX_OK)[21:], media_type=xml
        )
    if mode == "utf16_bomb":
        body = TAX_OK.replace("X, Y", "&lol4;")
        doc = '<?xml version="1.0" encoding="UTF-16"?>' + BOMB + _tax(body).decode()[21:]
        return Response(doc.encode("utf-16"), media_type=xml)
    if mode == "unknown_code":
        return Response(_tax(TAX_OK.replace(">S<", ">ZZ<")), media_type=xml)
    if mode == "missing_element":
        return Response(_tax(TAX_OK.replace("<t:FullName>X, Y</t:FullName>", "")), media_type=xml)
    if mode == "json":
        return JSONResponse({"TaxpayerId": "12345678901"})
    if mode == "unavailable":
        return Response(b"", status_code=503)
    return Response(status_code=404)


app = Starlette(
    routes=[
        Route("/rest/{mode}/{key}", rest),
        Route("/rest/{mode}", rest),
        Route("/soap/{mode}", soap, methods=["POST", "GET"]),
        Route("/_hits", hits),
        Route("/_reset", reset, methods=["POST"]),
        Route("/healthz", lambda r: JSONResponse({"ok": True})),
    ]
)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--certfile", help="serve TLS with this certificate (PEM)")
    ap.add_argument("--keyfile")
    ap.add_argument("--client-ca", help="require client certificates issued by this CA")
    args = ap.parse_args()
    tls: dict[str, object] = {}
    if args.certfile:
        tls = {"ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}
        if args.client_ca:
            tls |= {"ssl_ca_certs": args.client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=1,
        **tls,
    )  # type: ignore[arg-type]
