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
from collections.abc import Mapping
from dataclasses import dataclass
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
#: A comment OPA starts an annotation block with: its text, trimmed, begins ``METADATA``.
_METADATA = re.compile(r"^[^\S\n]*#[^\S\n]*METADATA", re.MULTILINE)
#: A line that starts an import statement (which may go on over the next lines).
_IMPORT = re.compile(r"[ \t]*import\b")
_AS = re.compile(r"as\b")
#: Rego read as tokens, enough to find its names: a comment, a string, a raw string,
#: a name (or a ref step, ``.name``), a number, or any other character.
_TOKEN = re.compile(
    r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|`[^`]*`|\.?[A-Za-z_][A-Za-z0-9_]*|[0-9][0-9A-Za-z_.]*|.',
    re.DOTALL,
)


def merge_modules(sources: Mapping[str, str]) -> dict[str, str]:
    """Merge Rego files into one module per package: ``{package: source}``.

    The package declaration is read as OPA reads it (comments and line breaks
    around it, ``a.b["c"]`` steps), and so are imports, which are hoisted
    (even when split over lines; never a line inside a raw string). What OPA
    gives the files one by one, the merged module keeps: a ``# METADATA``
    block above a file's package line is the package's annotation, so it goes
    above the merged package line, not onto the file's first rule; and since
    OPA scopes an import to its file, an alias that is also a name in another
    file of the package (a rule, a variable) is refused, as are imports that
    clash (same alias, different target), package annotations in two files
    (as OPA does) and packages whose path cannot name an OPA policy. The
    proposal checks compile this output, so what they pass is what the OPA
    server is given.
    """
    files: dict[str, list[_File]] = {}
    for path, text in sorted(sources.items()):
        package, annotation, rest = _split_package(path, text)
        imports, body = _hoist_imports(path, rest)
        files.setdefault(package, []).append(_File(path, annotation, imports, body))
    return {package: _merged(package, parts) for package, parts in sorted(files.items())}


def policy_id(package: str) -> str:
    """The OPA policy id a package (as ``merge_modules`` names it) is pushed under."""
    segments, _ = _ref(package, 0)
    return POLICY_ID_PREFIX + "/".join(segments)


@dataclass(frozen=True)
class _Import:
    target: str  # the imported ref, canonical
    statement: str  # as the merged module writes it
    binds: bool  # whether the alias names something (not ``rego.v1``, ``future.keywords``)


@dataclass(frozen=True)
class _File:
    path: str
    annotation: str  # the METADATA block(s) above the package line, through to it
    imports: dict[str, _Import]  # by alias
    body: list[str]  # the file's lines, its package declaration and imports cut out


def _merged(package: str, files: list[_File]) -> str:
    imports: dict[str, _Import] = {}
    for file in files:
        for alias, found in file.imports.items():
            if imports.setdefault(alias, found).target != found.target:
                raise ValidationFailed(f"{file.path}: import {alias!r} clashes with another file")
    _verify_imports_stay_in_their_files(files)
    annotated = [f for f in files if f.annotation]
    if len(annotated) > 1:
        raise ValidationFailed(
            f"{annotated[1].path}: a METADATA block above the package line, as in"
            f" {annotated[0].path}: a package has one package annotation"
        )
    head = f"# --- {annotated[0].path}\n{annotated[0].annotation}" if annotated else ""
    lines = [line for f in files for line in (f"# --- {f.path}", *f.body)]
    statements = sorted(i.statement for i in imports.values())  # one per alias
    return "\n".join([f"{head}package {package}", "", *statements, "", *lines, ""])


def _verify_imports_stay_in_their_files(files: list[_File]) -> None:
    """OPA resolves a name against the imports of its own file only; in the merged
    module every file sees every import. So an alias must not be a name (a rule,
    a variable, a function) in a file of the package that does not import it too."""
    names = {f.path: _names("\n".join(f.body)) for f in files}
    for file in files:
        for alias, found in file.imports.items():
            for other in files:
                if found.binds and alias not in other.imports and alias in names[other.path]:
                    raise ValidationFailed(
                        f"{file.path}: import alias {alias!r} is also a name in {other.path}"
                        " (a rule or a variable). OPA scopes an import to its own file, but"
                        " merged into one module for the OPA server the alias would stand for"
                        f" {found.target} there too: choose another alias"
                    )


def _split_package(path: str, text: str) -> tuple[str, str, str]:
    """``(package, its annotation, the text with both cut out)``; the package in canonical form.

    The annotation is the text from the first ``# METADATA`` comment above the
    declaration (OPA attaches that block to the package, whatever comes between)
    up to the declaration, kept byte for byte so OPA reads it as it did in the file.
    """
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
    block = _METADATA.search(text, 0, start)
    cut = block.start() if block is not None else start
    # The remainder of the declaration's line (a comment, an import) stays a line.
    return _canonical(segments), text[cut:start], text[:cut] + text[end:].lstrip(" \t")


def _canonical(segments: list[str]) -> str:
    return segments[0] + "".join(
        f".{s}" if _IDENT.fullmatch(s) else f"[{json.dumps(s)}]" for s in segments[1:]
    )


def _hoist_imports(path: str, rest: str) -> tuple[dict[str, _Import], list[str]]:
    """The file's imports by alias, and its lines with each import statement
    blanked (a statement over several lines blanks them all; what follows it on
    its last line stays)."""
    imports: dict[str, _Import] = {}
    body: list[str] = []
    pos, in_raw = 0, False
    while pos <= len(rest):
        end = rest.find("\n", pos)
        end = len(rest) if end < 0 else end
        keyword = None if in_raw else _IMPORT.match(rest, pos, end)
        if keyword is None:
            line = rest[pos:end]
            body.append(line)
            in_raw = _scan(line, in_raw)[1]
            pos = end + 1
            continue
        alias, found, stop = _read_import(path, rest, keyword.end())
        if imports.setdefault(alias, found).target != found.target:
            raise ValidationFailed(f"{path}: import {alias!r} is declared twice")
        body.extend([""] * rest.count("\n", pos, stop))
        pos = stop
    return imports, body


def _read_import(path: str, text: str, pos: int) -> tuple[str, _Import, int]:
    """``(alias, the import, where it ends)`` for the statement whose keyword ends at ``pos``."""
    segments, end = _ref(text, _skip_gap(text, pos))
    if not segments:
        raise ValidationFailed(f"{path}: cannot read an import")
    target, alias, explicit = _canonical(segments), segments[-1], False
    keyword = _AS.match(text, _skip_gap(text, end))
    if keyword is not None:
        name = _IDENT.match(text, _skip_gap(text, keyword.end()))
        if name is None:
            raise ValidationFailed(f"{path}: cannot read the alias of import {target}")
        alias, end, explicit = name.group(), name.end(), True
    statement = f"import {target} as {alias}" if explicit else f"import {target}"
    binds = segments[0] not in ("future", "rego") and target != alias
    return alias, _Import(target, statement, binds), end


def _names(text: str) -> set[str]:
    """Every name in Rego ``text`` outside strings and comments, except ref steps (``.name``)."""
    return {
        token
        for token in (m.group() for m in _TOKEN.finditer(text))
        if token[0] == "_" or token[0].isalpha()
    }


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
