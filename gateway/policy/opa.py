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
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opa_client import AsyncOpaClient

from gateway.errors import PolicyError, ValidationFailed
from gateway.policy.bundle import PolicyBundle
from gateway.policy.engine import Decision, EngineHealth, decision_from_value

__all__ = ["POLICY_ID_PREFIX", "OpaEngine", "merge_modules"]

#: Every policy we push lives under this id prefix; others are left alone.
POLICY_ID_PREFIX = "accord/"
_PACKAGE = re.compile(r"^package\s+([A-Za-z_][\w.]*)\s*$")
_IMPORT = re.compile(r"^import\s+\S.*$")


def merge_modules(sources: Mapping[str, str]) -> dict[str, str]:
    """Merge Rego files into one module per package: ``{package: source}``.

    Refuses files whose imports clash (same alias, different target), which is
    the one way merging could change meaning.
    """
    bodies: dict[str, list[str]] = {}
    imports: dict[str, dict[str, str]] = {}
    for path, text in sorted(sources.items()):
        package: str | None = None
        body: list[str] = [f"# --- {path}"]
        for line in text.splitlines():
            stripped = line.strip()
            match = _PACKAGE.match(stripped)
            if package is None and match:
                package = match.group(1)
                continue
            if package is not None and _IMPORT.match(stripped) and not line.startswith((" ", "\t")):
                alias = _import_alias(stripped)
                seen = imports.setdefault(package, {})
                if seen.get(alias, stripped) != stripped:
                    raise ValidationFailed(f"{path}: import {alias!r} clashes with another file")
                seen[alias] = stripped
                body.append("")
                continue
            body.append(line)
        if package is None:
            raise ValidationFailed(f"{path}: no package declaration")
        bodies.setdefault(package, []).extend(body)
    return {
        package: "\n".join(
            [f"package {package}", "", *sorted(imports.get(package, {}).values()), "", *lines, ""]
        )
        for package, lines in sorted(bodies.items())
    }


def _import_alias(statement: str) -> str:
    parts = statement.split()
    if len(parts) >= 4 and parts[2] == "as":
        return parts[3]
    return parts[1].rsplit(".", 1)[-1]


def _policy_id(package: str) -> str:
    return POLICY_ID_PREFIX + package.replace(".", "/")


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
                        text, _policy_id(package), rego_compat=False
                    )
                stale = set(await self._client.get_policies_list()) - {
                    _policy_id(p) for p in modules
                }
                for policy_id in sorted(stale):
                    if policy_id.startswith(POLICY_ID_PREFIX):
                        await self._client.delete_policy(policy_id)
            except Exception as exc:
                self._version = None  # the server's state is unknown now: decide nothing
                raise PolicyError(f"OPA refused the bundle: {exc}", code="policy_invalid") from exc
            self._pushed = {_policy_id(p): _digest(t) for p, t in modules.items()}
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
        for policy_id, digest in self._pushed.items():
            try:
                info = await self._client.get_policy(policy_id)
            except Exception as exc:
                return EngineHealth(False, self.name, self._version, f"{policy_id}: {exc}")
            raw = info.get("result", {}).get("raw", "")
            if _digest(raw) != digest:
                return EngineHealth(
                    False, self.name, self._version, f"{policy_id} differs from the pushed policy"
                )
        return EngineHealth(True, self.name, self._version)

    async def close(self) -> None:
        await self._client.close_connection()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
