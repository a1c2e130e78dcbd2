"""SOAP/XML connector: zeep builds and decodes messages, we own the wire.

zeep is the SOAP toolkit (WSDL, XSD types, envelopes), configured with
``forbid_dtd``, ``forbid_entities`` and ``forbid_external`` and loading the
WSDL from a local file only. The HTTP exchange itself goes through our pooled
aiohttp session so the byte cap, timeouts and retries are the same as for REST,
and the reply is parsed by our own lxml parser (``resolve_entities=False``,
``no_network=True``, no DTD, no huge trees) before zeep sees it: an XXE or
entity-expansion bomb is refused before any entity could be expanded.

A reply's values are checked against the WSDL's XSD types before zeep decodes
it (``_soap_values``): zeep would read a value that does not parse as "no value".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import zeep
import zeep.exceptions
import zeep.helpers
from lxml import etree
from zeep.settings import Settings

from connectors._entities import EntitySpec, entity, parse_entities, project
from connectors._http import HttpPool, read_capped, transport_fault
from connectors._soap_values import verify_values
from connectors._tls import tls_context
from connectors.interface import (
    Connector,
    ConnectorBadResponse,
    ConnectorConfigError,
    ConnectorUnavailable,
    EntitySchema,
    FetchContext,
    FetchResult,
    Health,
    NotFound,
    Page,
    UnknownField,
    UnsafeContent,
    freeze_record,
)
from connectors.resilience import Deadline, Resilience, ResilienceSettings, RetryableFault

__all__ = ["SoapConnector", "hardened_parser"]

_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
_XSD_JSON = {
    "int": "integer",
    "integer": "integer",
    "long": "integer",
    "short": "integer",
    "decimal": "string",
    "boolean": "boolean",
    "double": "number",
    "float": "number",
}


def hardened_parser() -> etree.XMLParser:
    """An lxml parser that never resolves entities, loads DTDs or touches the network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


class _LocalOnlyTransport(zeep.Transport):
    """zeep transport that may read the local WSDL but never fetches anything."""

    def __init__(self) -> None:
        super().__init__(timeout=1)  # type: ignore[no-untyped-call]

    def _load_remote_data(self, url: str) -> bytes:
        raise ConnectorConfigError("WSDL/XSD imports over the network are refused")


class SoapConnector(Connector):
    """Each entity is one document/literal operation taking the key as an argument."""

    kind = "soap"

    def __init__(self, config: Mapping[str, Any]) -> None:
        name = str(config.get("name", "soap"))
        super().__init__(name)
        wsdl = config.get("wsdl")
        if not isinstance(wsdl, str) or not Path(wsdl).is_file():
            raise ConnectorConfigError("soap connector needs a local 'wsdl' file", connector=name)
        self.entities = parse_entities(config, name)
        self.settings = ResilienceSettings.from_config(dict(config))
        self.resilience = Resilience(name, self.settings)
        try:
            self._zeep = zeep.Client(  # type: ignore[no-untyped-call]
                wsdl,
                transport=_LocalOnlyTransport(),
                settings=Settings(
                    strict=True,
                    forbid_dtd=True,
                    forbid_entities=True,
                    forbid_external=True,
                    xml_huge_tree=False,
                ),
            )
        except (zeep.exceptions.Error, etree.XMLSyntaxError, OSError) as exc:
            raise ConnectorConfigError(f"WSDL does not load: {exc}", connector=name) from exc
        self._service = self._zeep.service
        self._binding = self._service._binding
        address = config.get("address") or self._service._binding_options.get("address")
        if not isinstance(address, str) or not address.startswith(("http://", "https://")):
            raise ConnectorConfigError("soap connector needs an http(s) address", connector=name)
        self.address = address
        self.ping_operation = config.get("ping_operation")
        self.not_found_faults = tuple(config.get("not_found_faults", ["Client.NotFound"]))
        for spec in self.entities.values():
            op = spec.options.get("operation")
            try:
                self._binding.get(op)
            except (ValueError, KeyError) as exc:
                raise ConnectorConfigError(f"WSDL has no operation {op!r}", connector=name) from exc
        self._pool = HttpPool(self.settings, tls_context(config.get("tls"), address, name))

    async def aclose(self) -> None:
        await self._pool.aclose()

    # ----------------------------------------------------------------- interface

    async def check(self, ctx: FetchContext | None = None) -> Health:
        start = time.perf_counter()
        if isinstance(self.ping_operation, str):
            await self._invoke(self.ping_operation, {}, ctx)
        else:

            async def op(deadline: Deadline) -> None:
                try:
                    async with self._pool.session().get(
                        self.address, params={"wsdl": ""}, allow_redirects=False
                    ) as r:
                        status = r.status  # the WSDL itself is not needed: left unread
                except aiohttp.ClientError as exc:
                    raise ConnectorUnavailable("provider unreachable", connector=self.name) from exc
                if status >= 400:
                    raise ConnectorUnavailable(f"provider answered {status}", connector=self.name)

            await self.resilience.call(op, idempotent=True, ctx=ctx)
        return Health(self.name, self.kind, "ok", (time.perf_counter() - start) * 1000)

    async def discover(self, ctx: FetchContext | None = None) -> tuple[EntitySchema, ...]:
        try:
            return tuple(self._describe(spec) for spec in self.entities.values())
        except (KeyError, AttributeError, TypeError, ValueError, zeep.exceptions.Error) as exc:
            raise ConnectorConfigError(
                "entity options do not match the WSDL", connector=self.name
            ) from exc

    def _describe(self, spec: EntitySpec) -> EntitySchema:
        """The entity's reply record as JSON Schema, from the local WSDL's XSD types."""
        node = self._binding.get(spec.options["operation"]).output.body.type
        for part in str(spec.options.get("result_path", "")).split("."):
            if part:
                node = dict(node.elements)[part].type
        elements = getattr(node, "elements", [])
        if len(elements) == 1 and getattr(elements[0][1].type, "elements", None):
            node = elements[0][1].type  # zeep unwraps a single-record reply the same way
        props = {}
        for fname, element in getattr(node, "elements", []):
            if fname in spec.fields:
                props[fname] = {"type": _XSD_JSON.get(element.type.name or "", "string")}
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": props,
        }
        return EntitySchema(spec.name, spec.key, schema)

    async def fetch(
        self, entity_name: str, key: str, fields: Sequence[str], ctx: FetchContext | None = None
    ) -> FetchResult:
        spec = entity(self.entities, entity_name, self.name)
        wanted = spec.check_fields(fields, self.name)
        spec.check_key(key, self.name)
        result = await self._invoke(
            str(spec.options["operation"]),
            {spec.key: key},
            ctx,
            idempotent=bool(spec.options.get("idempotent", True)),
        )
        record = _plain(zeep.helpers.serialize_object(result, dict))  # type: ignore[no-untyped-call]
        for part in str(spec.options.get("result_path", "")).split("."):
            if part:
                record = record.get(part) if isinstance(record, dict) else None
        if not isinstance(record, dict):
            raise ConnectorBadResponse("reply does not hold a record", connector=self.name)
        return FetchResult(
            self.name, spec.name, key, freeze_record(project(record, wanted)), wanted
        )

    async def read(
        self,
        entity_name: str,
        fields: Sequence[str],
        *,
        filters: Mapping[str, str] | None = None,
        cursor: str | None = None,
        limit: int = 100,
        ctx: FetchContext | None = None,
    ) -> Page:
        spec = entity(self.entities, entity_name, self.name)
        raise UnknownField(
            f"entity {spec.name!r} has no bulk operation in this service", connector=self.name
        )

    # ----------------------------------------------------------------- wire

    async def _invoke(
        self,
        operation: str,
        args: Mapping[str, Any],
        ctx: FetchContext | None,
        *,
        idempotent: bool = True,
    ) -> Any:
        try:
            envelope = self._zeep.create_message(  # type: ignore[no-untyped-call]
                self._service, operation, **args
            )
        except (zeep.exceptions.Error, TypeError) as exc:
            raise UnknownField(f"cannot build {operation} request", connector=self.name) from exc
        payload = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{self._binding.get(operation).soapaction or ""}"',
        }

        async def op(deadline: Deadline) -> Any:
            status, body = await self._post(payload, headers)
            doc = await asyncio.to_thread(_parse, body, self.name)
            fault = doc.find(f"{{{_SOAP11}}}Body/{{{_SOAP11}}}Fault")
            if fault is None:
                fault = doc.find(f"{{{_SOAP12}}}Body/{{{_SOAP12}}}Fault")
            if fault is not None:
                code = (fault.findtext("faultcode") or "").split(":")[-1]
                if code in self.not_found_faults:
                    raise NotFound("provider has no such record", connector=self.name)
                if status in (502, 503, 504):
                    raise RetryableFault(
                        f"status {status}",
                        connector=self.name,
                        final=ConnectorUnavailable(
                            f"provider answered {status}", connector=self.name
                        ),
                    )
                raise ConnectorBadResponse(
                    f"provider returned a SOAP fault ({code or '?'})", connector=self.name
                )
            if status != 200:
                raise ConnectorBadResponse(f"provider answered {status}", connector=self.name)
            binding_op = self._binding.get(operation)
            try:
                verify_values(binding_op, doc, self._zeep.wsdl.types)
                return binding_op.process_reply(doc)
            except (
                zeep.exceptions.Error,
                ValueError,
                TypeError,
                AttributeError,
                ArithmeticError,  # zeep's xs:decimal lets decimal.InvalidOperation through
            ) as exc:
                raise ConnectorBadResponse(
                    "reply does not match the WSDL", connector=self.name
                ) from exc

        return await self.resilience.call(op, idempotent=idempotent, ctx=ctx)

    async def _post(self, payload: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        cap = self.settings.max_response_bytes
        try:
            async with self._pool.session().post(
                self.address, data=payload, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                if status in (502, 503, 504) and not _is_xml(resp):
                    raise RetryableFault(
                        f"status {status}",
                        connector=self.name,
                        final=ConnectorUnavailable(
                            f"provider answered {status}", connector=self.name
                        ),
                    )
                if not _is_xml(resp):
                    raise ConnectorBadResponse(
                        "provider answered with a non-XML content type", connector=self.name
                    )
                body = await read_capped(resp, cap, self.name)
        except aiohttp.ClientError as exc:
            raise transport_fault(exc, self.name) from exc
        return status, body


def _is_xml(resp: aiohttp.ClientResponse) -> bool:
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return ctype in ("text/xml", "application/soap+xml", "application/xml")


def _parse(body: bytes, connector: str) -> etree._Element:
    head = body[:4096].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in body.upper():
        raise UnsafeContent("reply carries a DTD or entity declarations", connector=connector)
    try:
        doc = etree.fromstring(body, hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise ConnectorBadResponse("reply is not well-formed XML", connector=connector) from exc
    if doc.getroottree().docinfo.doctype:
        raise UnsafeContent("reply carries a DTD", connector=connector)
    return doc


def _plain(value: Any) -> Any:
    """zeep objects → JSON-compatible values (decimals as exact strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
