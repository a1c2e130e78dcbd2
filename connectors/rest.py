"""REST/JSON connector: a department API reached through a pooled aiohttp session.

Bodies are streamed and cut off at the byte cap (checked on decoded bytes, so
a gzip bomb is capped too); only ``application/json`` answers are parsed; keys
are percent-encoded into the path so a key can never change the URL; proxies
from the environment, redirects and cookies set by the provider are ignored so
requests go exactly where the config says, carrying only what it says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from connectors._entities import EntitySpec, entity, parse_entities, project
from connectors._http import HttpPool, read_capped, transport_fault
from connectors._tls import tls_context
from connectors.interface import (
    Connector,
    ConnectorAuthFailed,
    ConnectorBadResponse,
    ConnectorConfigError,
    ConnectorUnavailable,
    EntitySchema,
    FetchContext,
    FetchResult,
    Health,
    NotFound,
    Page,
    freeze_record,
)
from connectors.resilience import Deadline, Resilience, ResilienceSettings, RetryableFault

__all__ = ["RestConnector"]

_TRANSIENT_STATUS = frozenset({502, 503, 504})
_ACCEPT_JSON = {"Accept": "application/json"}


class RestConnector(Connector):
    """Reads entities from ``base_url`` using per-entity path templates."""

    kind = "rest"

    def __init__(self, config: Mapping[str, Any]) -> None:
        name = str(config.get("name", "rest"))
        super().__init__(name)
        base_url = config.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConnectorConfigError("rest connector needs an http(s) base_url", connector=name)
        self.entities = parse_entities(config, name)
        self._paths: dict[str, str] = {}
        for spec in self.entities.values():
            path = spec.options.get("path", f"/{spec.name}/{{key}}")
            if not isinstance(path, str) or "{key}" not in path:
                # Every subject would get the same record: the one at that path.
                raise ConnectorConfigError(
                    f"entity {spec.name!r}: path must hold {{key}}", connector=name
                )
            self._paths[spec.name] = path
        self.settings = ResilienceSettings.from_config(dict(config))
        self.resilience = Resilience(name, self.settings)
        self.health_path = str(config.get("health_path", "/healthz"))
        self.openapi_path = str(config.get("openapi_path", "/openapi.json"))
        # Entity paths are appended to the base URL's path, never resolved against it.
        self._base = base_url if base_url.endswith("/") else base_url + "/"
        self._pool = HttpPool(
            self.settings,
            tls_context(config.get("tls"), base_url, name),
            _auth_headers(config.get("auth"), name),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    # ----------------------------------------------------------------- interface

    async def check(self, ctx: FetchContext | None = None) -> Health:
        start = time.perf_counter()

        async def op(deadline: Deadline) -> Any:
            return await self._get_json(self.health_path, {}, deadline)

        await self.resilience.call(op, idempotent=True, ctx=ctx)
        return Health(self.name, self.kind, "ok", (time.perf_counter() - start) * 1000)

    async def discover(self, ctx: FetchContext | None = None) -> tuple[EntitySchema, ...]:
        async def op(deadline: Deadline) -> Any:
            return await self._get_json(self.openapi_path, {}, deadline)

        doc = await self.resilience.call(op, idempotent=True, ctx=ctx)
        components = _dig(doc, "components.schemas", self.name, missing_ok=True) or {}
        if not isinstance(doc, dict) or not isinstance(components, dict):
            raise ConnectorBadResponse("OpenAPI document is not an object", connector=self.name)
        out = []
        for spec in self.entities.values():
            name = spec.options.get("schema")
            schema: dict[str, Any] = {"type": "object"}
            if isinstance(name, str) and isinstance(components.get(name), dict):
                schema = dict(components[name])
                schema["$defs"] = components
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            props = schema.get("properties")
            if isinstance(props, dict):
                schema["properties"] = {k: v for k, v in props.items() if k in spec.fields}
            out.append(EntitySchema(spec.name, spec.key, schema))
        return tuple(out)

    async def fetch(
        self, entity_name: str, key: str, fields: Sequence[str], ctx: FetchContext | None = None
    ) -> FetchResult:
        spec = entity(self.entities, entity_name, self.name)
        wanted = spec.check_fields(fields, self.name)
        spec.check_key(key, self.name)
        path = self._paths[spec.name].replace("{key}", quote(key, safe=""))
        params = self._fields_param(spec, wanted)

        async def op(deadline: Deadline) -> Any:
            return await self._get_json(path, params, deadline)

        doc = await self.resilience.call(op, idempotent=True, ctx=ctx)
        record = _dig(doc, spec.options.get("record_path"), self.name)
        if not isinstance(record, dict):
            raise ConnectorBadResponse("record is not a JSON object", connector=self.name)
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
        wanted = spec.check_fields(fields, self.name)
        if filters:
            spec.check_fields(list(filters), self.name)
        params = self._fields_param(spec, wanted)
        params.update({k: str(v) for k, v in (filters or {}).items()})
        params[str(spec.options.get("limit_param", "limit"))] = str(max(1, min(limit, 1000)))
        if cursor is not None:
            params[str(spec.options.get("cursor_param", "cursor"))] = cursor
        path = str(spec.options.get("list_path", f"/{spec.name}"))

        async def op(deadline: Deadline) -> Any:
            return await self._get_json(path, params, deadline)

        doc = await self.resilience.call(op, idempotent=True, ctx=ctx)
        items = _dig(doc, spec.options.get("records_path", "items"), self.name)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ConnectorBadResponse("page is not a list of objects", connector=self.name)
        nxt = _dig(doc, spec.options.get("next_path", "next"), self.name, missing_ok=True)
        if nxt is not None and not isinstance(nxt, str):
            raise ConnectorBadResponse("next cursor is not a string", connector=self.name)
        records = tuple(freeze_record(project(i, wanted)) for i in items)
        return Page(self.name, spec.name, records, nxt, wanted)

    # ----------------------------------------------------------------- transport

    def _fields_param(self, spec: EntitySpec, wanted: tuple[str, ...]) -> dict[str, str]:
        param = spec.options.get("fields_param")
        return {str(param): ",".join(wanted)} if param else {}

    async def _get_json(self, path: str, params: Mapping[str, str], deadline: Deadline) -> Any:
        url = self._base + path.lstrip("/")
        try:
            async with self._pool.session().get(
                url, params=params or None, headers=_ACCEPT_JSON, allow_redirects=False
            ) as resp:
                self._check_status(resp)
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype != "application/json" and not ctype.endswith("+json"):
                    raise ConnectorBadResponse(
                        "provider answered with a non-JSON content type", connector=self.name
                    )
                body = await read_capped(resp, self.settings.max_response_bytes, self.name)
        except aiohttp.ClientError as exc:
            raise transport_fault(exc, self.name) from exc
        return _parse_json(body, self.name)

    def _check_status(self, resp: aiohttp.ClientResponse) -> None:
        status = resp.status
        if 200 <= status < 300:
            return
        if status == 404:
            raise NotFound("provider has no such record", connector=self.name)
        if status in (401, 403):
            raise ConnectorAuthFailed(
                f"provider refused our credentials ({status})", connector=self.name
            )
        final = ConnectorUnavailable(f"provider answered {status}", connector=self.name)
        if status in _TRANSIENT_STATUS:
            raise RetryableFault(f"status {status}", connector=self.name, final=final)
        if status == 429:
            after = _retry_after(resp.headers.get("Retry-After"))
            if after is not None:
                raise RetryableFault(
                    "rate limited", connector=self.name, retry_after=after, final=final
                )
            raise final
        if status >= 500:
            raise final
        raise ConnectorBadResponse(f"provider answered {status}", connector=self.name)


def _auth_headers(auth: Any, connector: str) -> dict[str, str]:
    if not auth:
        return {}
    if not isinstance(auth, Mapping) or not isinstance(auth.get("token"), str):
        raise ConnectorConfigError("auth needs a 'token' string", connector=connector)
    header = str(auth.get("header", "Authorization"))
    scheme = auth.get("scheme", "Bearer" if header.lower() == "authorization" else None)
    token = auth["token"]
    if not token:
        raise ConnectorConfigError("auth token is empty", connector=connector)
    return {header: f"{scheme} {token}" if scheme else token}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        secs = float(value.strip())
    except ValueError:
        return None  # HTTP-date form: we do not wait on a server's clock
    return secs if 0 <= secs < 3600 else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_json(body: bytes, connector: str) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ConnectorBadResponse("body is not valid JSON", connector=connector) from exc


def _dig(doc: Any, path: Any, connector: str, *, missing_ok: bool = False) -> Any:
    if not path:
        return doc
    cur = doc
    for part in str(path).split("."):
        if not isinstance(cur, dict) or part not in cur:
            if missing_ok:
                return None
            raise ConnectorBadResponse(f"response lacks {path!r}", connector=connector)
        cur = cur[part]
    return cur
