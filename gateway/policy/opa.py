"""The ``opa`` policy engine: a real OPA server over its REST API.

Talks to OPA only through ``opa-python-client``'s ``AsyncOpaClient``, created
in the app lifespan (``OpaEngine.connect``) and closed on shutdown. Policies are
pushed as source with ``rego_compat=False`` (our Rego is v1; silently
"upgrading" v0 would change what was approved) and never fetched from a URL.

A bundle's files are merged into one module per package before the push, so a
version switch is a single ``PUT`` per package: OPA never evaluates a mix of
the old and new files, and a file that only compiles together with its new
siblings does not fail half-way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from opa_client import AsyncOpaClient

from gateway.errors import PolicyError, ValidationFailed
from gateway.policy.bundle import PolicyBundle
from gateway.policy.engine import Decision, EngineHealth, decision_from_value

__all__ = ["POLICY_ID_PREFIX", "OpaEngine", "merge_modules", "policy_id"]

#: Every policy we push lives under this id prefix; others are left alone.
POLICY_ID_PREFIX = "accord/"
#: Whitespace and comments, which OPA allows anywhere between tokens.
_GAP = re.compile(r"(?:\s|#[^\n]*)*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE = re.compile(r"package\b")
#: What may follow a package path: a gap, a comment or the end of the file.
_BOUNDARY = re.compile(r"\s|#|\Z")
#: One more step of a ref: ``.name``, ``["name"]`` or ``[`name`]``.
_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*("(?:[^"\\\n]|\\.)*"|`[^`]*`)\s*\]')
#: What a package path segment may be to name an OPA policy (ids go into a URL path).
_POLICY_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def merge_modules(sources: Mapping[str, str]) -> dict[str, str]:
    """Merge Rego files into one module per package: ``{package: source}``.

    The package declaration is read as OPA reads it (comments and line breaks
    around it, ``a.b["c"]`` steps); imports are hoisted, except a line inside a
    raw string. Refuses files whose imports clash (same alias, different
    target), which is the one way merging could change meaning, and packages
    whose path cannot name an OPA policy. The proposal checks compile this
    output, so what they pass is what the OPA server is given.
    """
    bodies: dict[str, list[str]] = {}
    imports: dict[str, dict[str, str]] = {}
    for path, text in sorted(sources.items()):
        package, rest = _split_package(path, text)
        body: list[str] = [f"# --- {path}"]
        seen = imports.setdefault(package, {})
        for line, in_raw in _lines(rest):
            statement = "" if in_raw else " ".join(_code(line).split())
            if statement.startswith("import "):
                alias = _import_alias(statement)
                if seen.get(alias, statement) != statement:
                    raise ValidationFailed(f"{path}: import {alias!r} clashes with another file")
                seen[alias] = statement
                body.append("")
                continue
            body.append(line)
        bodies.setdefault(package, []).extend(body)
    return {
        package: "\n".join(
            [f"package {package}", "", *sorted(imports[package].values()), "", *lines, ""]
        )
        for package, lines in sorted(bodies.items())
    }


def policy_id(package: str) -> str:
    """The OPA policy id a package (as ``merge_modules`` names it) is pushed under."""
    segments, _ = _ref(package, 0)
    return POLICY_ID_PREFIX + "/".join(segments)


def _split_package(path: str, text: str) -> tuple[str, str]:
    """``(package, the text with the declaration cut out)``; the package in canonical form."""
    start = _skip_gap(text, 0)
    keyword = _PACKAGE.match(text, start)
    if keyword is None:
        raise ValidationFailed(f"{path}: no package declaration")
    segments, end = _ref(text, _skip_gap(text, keyword.end()))
    if not segments or not _BOUNDARY.match(text, end):
        raise ValidationFailed(f"{path}: cannot read the package declaration")
    for segment in segments:
        if not _POLICY_SEGMENT.fullmatch(segment):
            raise ValidationFailed(
                f"{path}: package path segment {segment!r} cannot name an OPA policy"
                " (letters, digits, '_' and '-' only)"
            )
    canonical = segments[0] + "".join(
        f".{s}" if _IDENT.fullmatch(s) else f"[{json.dumps(s)}]" for s in segments[1:]
    )
    # The remainder of the declaration's line (a comment, an import) stays a line.
    return canonical, text[:start] + text[end:].lstrip(" \t")


def _skip_gap(text: str, pos: int) -> int:
    gap = _GAP.match(text, pos)
    return gap.end() if gap else pos


def _ref(text: str, pos: int) -> tuple[list[str], int]:
    """The segments of the ref at ``pos`` (``[]`` if none) and where it ends."""
    first = _IDENT.match(text, pos)
    if first is None:
        return [], pos
    segments, pos = [first.group()], first.end()
    while step := _STEP.match(text, pos):
        name, quoted = step.groups()
        if name is None:
            name = json.loads(quoted) if quoted.startswith('"') else quoted[1:-1]
        segments.append(name)
        pos = step.end()
    return segments, pos


def _lines(text: str) -> Iterator[tuple[str, bool]]:
    """Each line of ``text`` (content kept byte for byte), and whether it starts
    inside a raw string, where a line reading ``import …`` is data, not an import."""
    in_raw = False
    for line in text.split("\n"):
        yield line, in_raw
        in_raw = _scan(line, in_raw)[1]


def _code(line: str) -> str:
    """A line outside a raw string without its trailing comment."""
    return line[: _scan(line, False)[0]]


def _scan(line: str, in_raw: bool) -> tuple[int, bool]:
    """Where the line's comment starts (or its length) and whether it ends inside a raw string."""
    i = 0
    while i < len(line):
        char = line[i]
        if in_raw:
            in_raw = char != "`"
        elif char == "#":
            return i, False
        elif char == "`":
            in_raw = True
        elif char == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
        i += 1
    return len(line), in_raw


def _import_alias(statement: str) -> str:
    parts = statement.split()
    if len(parts) >= 4 and parts[2] == "as":
        return parts[3]
    segments, _ = _ref(parts[1], 0)
    return segments[-1] if segments else parts[1]


class OpaEngine:
    """``PolicyEngine`` backed by a real OPA server."""

    name = "opa"

    def __init__(self, client: AsyncOpaClient, *, timeout_ms: int = 500) -> None:
        self._client = client
        self._timeout = timeout_ms / 1000
        self._version: str | None = None
        self._pushed: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._generation = 0

    @classmethod
    async def connect(cls, url: str, *, timeout_ms: int = 500) -> OpaEngine:
        """Open the client session (call from the app lifespan; ``close`` on shutdown)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationFailed(f"OPA URL must be http(s)://host:port, got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 8181)
        client = AsyncOpaClient(
            host=parts.hostname,
            port=port,
            ssl=parts.scheme == "https",
            timeout=timeout_ms / 1000,
            retries=0,
        )
        await client._init_session()  # the public entry is `async with`; we own the lifetime
        return cls(client, timeout_ms=timeout_ms)

    @property
    def version(self) -> str | None:
        return self._version

    async def load(self, bundle: PolicyBundle) -> None:
        modules = merge_modules(bundle.policy_sources())
        async with self._lock:
            self._generation += 1
            try:
                for package, text in modules.items():
                    await self._client.update_policy_from_string(
                        text, policy_id(package), rego_compat=False
                    )
                stale = set(await self._client.get_policies_list()) - {
                    policy_id(p) for p in modules
                }
                for stale_id in sorted(stale):
                    if stale_id.startswith(POLICY_ID_PREFIX):
                        await self._client.delete_policy(stale_id)
            except Exception as exc:
                self._version = None  # the server's state is unknown now: decide nothing
                raise PolicyError(f"OPA refused the bundle: {exc}", code="policy_invalid") from exc
            self._pushed = {policy_id(p): _digest(t) for p, t in modules.items()}
            self._version = bundle.version
            self._generation += 1

    async def decide(self, policy_input: Mapping[str, Any]) -> Decision:
        # Decisions run concurrently; a load in progress makes them wait, and a
        # decision that overlapped a load is asked again, so the version a
        # decision reports is always the one that made it.
        for _ in range(3):
            while self._lock.locked():
                async with self._lock:
                    pass
            generation, version = self._generation, self._version
            if version is None:
                return Decision.error("no policy loaded", policy_version=None, engine=self.name)
            decision = await self._query(policy_input, version)
            if generation == self._generation and not self._lock.locked():
                return decision
        return Decision.error(
            "policy changed during the decision", policy_version=None, engine=self.name
        )

    async def _query(self, policy_input: Mapping[str, Any], version: str) -> Decision:
        try:
            async with asyncio.timeout(self._timeout):  # no extra task, unlike wait_for
                response = await self._client.query_rule(
                    input_data=policy_input,
                    package_path="accord.exchange",
                    rule_name="decision",
                )
        except TimeoutError:
            return Decision.error("policy timeout", policy_version=version, engine=self.name)
        except Exception as exc:
            return Decision.error(
                f"OPA query failed: {type(exc).__name__}: {exc}",
                policy_version=version,
                engine=self.name,
            )
        if not isinstance(response, dict) or "result" not in response:
            return Decision.error(
                "undefined decision (no result)", policy_version=version, engine=self.name
            )
        return decision_from_value(response["result"], policy_version=version, engine=self.name)

    async def health(self) -> EngineHealth:
        """Healthy when OPA answers and holds exactly the modules we pushed."""
        if not await self._client.check_health():
            return EngineHealth(False, self.name, self._version, "OPA unreachable")
        if self._version is None:
            return EngineHealth(False, self.name, None, "no policy loaded")
        for pushed_id, digest in self._pushed.items():
            try:
                info = await self._client.get_policy(pushed_id)
            except Exception as exc:
                return EngineHealth(False, self.name, self._version, f"{pushed_id}: {exc}")
            raw = info.get("result", {}).get("raw", "")
            if _digest(raw) != digest:
                return EngineHealth(
                    False, self.name, self._version, f"{pushed_id} differs from the pushed policy"
                )
        return EngineHealth(True, self.name, self._version)

    async def close(self) -> None:
        await self._client.close_connection()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
