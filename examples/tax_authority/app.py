"""The tax authority's SOAP service (starlette + lxml), as the demo's provider.

Requests are parsed with a hardened lxml parser (no DTD, no entities, no
network) like any careful SOAP server would. The data differ from canonical:
``LAST, First`` names, ``YYYYMMDD`` filing dates, filing-status and compliance
code lists, legal-form codes and ``DD.MM.YYYY`` registration dates.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from examples.synth import SEED, businesses, people

__all__ = ["NS", "create_app", "tax_records"]

NS = "urn:example:tax-authority:v1"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL = Path(__file__).with_name("service.wsdl")


def tax_records() -> dict[str, dict[str, str]]:
    rng = random.Random(SEED + 3)
    out = {}
    for p in people():
        if p.household_role == "child" and rng.random() < 0.7:
            continue
        year = rng.choice([2022, 2023, 2024, 2025])
        filed = f"{year + 1}{rng.randint(1, 9):02d}{rng.randint(1, 28):02d}"
        out[p.person_id] = {
            "TaxpayerId": p.person_id,
            "FullName": f"{p.family_name.upper()}, {p.given_name}",
            "FilingStatus": rng.choice(["S", "MJ", "MS", "HH"]),
            "Residency": rng.choice(["R", "R", "R", "NR"]),
            "LastAssessmentYear": str(year),
            "AssessedIncome": str(Decimal(rng.randint(0, 15_000_000)) / 100),
            "Compliance": rng.choice(["GOOD", "GOOD", "GOOD", "ARREARS", "UNDER_REVIEW"]),
            "LastFilingDate": filed,
        }
    return out


def business_records() -> dict[str, dict[str, str]]:
    return {
        b.company_number: {
            "CompanyNumber": b.company_number,
            "TradingName": b.trading_name,
            "LegalForm": b.legal_form,
            "RegisteredOn": b.registered_on.strftime("%d.%m.%Y"),
            "ActivityCode": b.activity_code,
            "StatusCode": b.status,
            "OwnerTaxpayerId": b.owner_id,
        }
        for b in businesses()
    }


def _envelope(body: etree._Element) -> bytes:
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "tns": NS})
    etree.SubElement(env, f"{{{SOAP}}}Body").append(body)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def _fault(code: str, text: str) -> Response:
    fault = etree.Element(f"{{{SOAP}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = text
    return Response(_envelope(fault), status_code=500, media_type="text/xml; charset=utf-8")


def _record(name: str, fields: dict[str, str]) -> etree._Element:
    el = etree.Element(f"{{{NS}}}{name}")
    for k, v in fields.items():
        etree.SubElement(el, f"{{{NS}}}{k}").text = v
    return el


def create_app() -> Starlette:
    taxes = tax_records()
    firms = business_records()
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )

    async def wsdl(request: Request) -> Response:
        return Response(WSDL.read_bytes(), media_type="text/xml; charset=utf-8")

    async def soap(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > 64 * 1024 or b"<!DOCTYPE" in raw.upper():
            return _fault("Client", "request refused")
        try:
            doc = etree.fromstring(raw, parser)
        except etree.XMLSyntaxError:
            return _fault("Client", "malformed XML")
        body = doc.find(f"{{{SOAP}}}Body")
        req = body[0] if body is not None and len(body) else None
        if req is None:
            return _fault("Client", "empty body")
        op = etree.QName(req).localname
        if op == "Ping":
            resp = etree.Element(f"{{{NS}}}PingResponse")
            etree.SubElement(resp, f"{{{NS}}}Status").text = "OK"
            return Response(_envelope(resp), media_type="text/xml; charset=utf-8")
        if op == "GetTaxStatusRequest":
            key, table, name = req.findtext(f"{{{NS}}}TaxpayerId"), taxes, "TaxStatus"
        elif op == "GetBusinessRequest":
            key, table, name = req.findtext(f"{{{NS}}}CompanyNumber"), firms, "Business"
        else:
            return _fault("Client", "unknown operation")
        if key is None or key not in table:
            return _fault("Client.NotFound", "no such record")
        resp = etree.Element(f"{{{NS}}}Get{name if name == 'TaxStatus' else 'Business'}Response")
        resp.append(_record(name, table[key]))
        return Response(_envelope(resp), media_type="text/xml; charset=utf-8")

    async def healthz(request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    return Starlette(
        routes=[
            Route("/soap", soap, methods=["POST"]),
            Route("/soap", wsdl, methods=["GET"]),
            Route("/healthz", healthz),
        ]
    )
