"""CSV connector: the newest export a department dropped into a folder.

Departments that only export files (nightly batches) are read with the
standard ``csv`` module. The newest file matching the entity's pattern wins;
it is indexed once per (path, size, mtime) so lookups by key are cheap. The
file size, the field size and the row count are capped; a file whose header
lacks a configured column, a row with the wrong number of cells, or a NUL
byte fails the whole read: a half-parsed export is never served.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors._entities import EntitySpec, entity, parse_entities, project
from connectors.interface import (
    Connector,
    ConnectorBadResponse,
    ConnectorConfigError,
    ConnectorTimeout,
    ConnectorUnavailable,
    EntitySchema,
    FetchContext,
    FetchResult,
    Health,
    NotFound,
    Page,
    ResponseTooLarge,
    UnsafeContent,
    freeze_record,
)
from connectors.resilience import (
    Deadline,
    Resilience,
    ResilienceSettings,
    config_count,
)

__all__ = ["CsvConnector"]

_MAX_FIELD = 64 * 1024


def _verify_entity_options(spec: EntitySpec, connector: str) -> None:
    """Refuse, when built, options every read would fail on."""
    pattern = spec.options.get("pattern", f"{spec.name}*.csv")
    if not isinstance(pattern, str) or not pattern or "/" in pattern or ".." in pattern:
        raise ConnectorConfigError(
            f"entity {spec.name!r}: pattern must be a file pattern inside the drop folder",
            connector=connector,
        )
    delimiter = spec.options.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ConnectorConfigError(
            f"entity {spec.name!r}: delimiter must be one character", connector=connector
        )
    try:
        codecs.lookup(str(spec.options.get("encoding", "utf-8-sig")))
    except LookupError as exc:
        raise ConnectorConfigError(
            f"entity {spec.name!r}: unknown encoding", connector=connector
        ) from exc


@dataclass(frozen=True, slots=True)
class _Index:
    stamp: tuple[str, int, int]
    header: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    by_key: Mapping[str, int]


class CsvConnector(Connector):
    """Entities are file patterns in ``directory``; keys are a column's values."""

    kind = "csv"

    def __init__(self, config: Mapping[str, Any]) -> None:
        name = str(config.get("name", "csv"))
        super().__init__(name)
        directory = config.get("directory")
        if not isinstance(directory, str) or not directory:
            raise ConnectorConfigError("csv connector needs a 'directory'", connector=name)
        self.directory = Path(directory)
        self.entities = parse_entities(config, name)
        for spec in self.entities.values():
            _verify_entity_options(spec, name)
        self.settings = ResilienceSettings.from_config(dict(config))
        self.resilience = Resilience(name, self.settings)
        self.max_rows = config_count(config, "max_rows", 1_000_000, name)
        self._index: dict[str, _Index] = {}
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------------- interface

    async def check(self, ctx: FetchContext | None = None) -> Health:
        start = time.perf_counter()

        async def op(deadline: Deadline) -> None:
            for spec in self.entities.values():
                self._latest(spec)

        await self.resilience.call(op, idempotent=True, ctx=ctx)
        return Health(self.name, self.kind, "ok", (time.perf_counter() - start) * 1000)

    async def discover(self, ctx: FetchContext | None = None) -> tuple[EntitySchema, ...]:
        out = []
        for spec in self.entities.values():
            index = await self._load(spec, ctx)
            props = {h: {"type": "string"} for h in index.header if h in spec.fields}
            schema = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": props,
            }
            out.append(EntitySchema(spec.name, spec.key, schema))
        return tuple(out)

    async def fetch(
        self, entity_name: str, key: str, fields: Sequence[str], ctx: FetchContext | None = None
    ) -> FetchResult:
        spec = entity(self.entities, entity_name, self.name)
        wanted = spec.check_fields(fields, self.name)
        spec.check_key(key, self.name)
        index = await self._load(spec, ctx)
        pos = index.by_key.get(key)
        if pos is None:
            raise NotFound("provider has no such record", connector=self.name)
        return FetchResult(
            self.name, spec.name, key, freeze_record(project(index.rows[pos], wanted)), wanted
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
        index = await self._load(spec, ctx)
        try:
            start = int(cursor) if cursor is not None else 0
        except ValueError:
            raise ConnectorBadResponse("cursor is not ours", connector=self.name) from None
        size = max(1, min(limit, 10_000))
        matched: list[Mapping[str, Any]] = []
        pos = start
        while pos < len(index.rows) and len(matched) < size:
            row = index.rows[pos]
            pos += 1
            if all(row.get(k) == v for k, v in (filters or {}).items()):
                matched.append(freeze_record(project(row, wanted)))
        nxt = str(pos) if pos < len(index.rows) else None
        return Page(self.name, spec.name, tuple(matched), nxt, wanted)

    # ----------------------------------------------------------------- files

    def _latest(self, spec: EntitySpec) -> Path:
        pattern = str(spec.options.get("pattern", f"{spec.name}*.csv"))
        if "/" in pattern or ".." in pattern:
            raise ConnectorConfigError(
                "file pattern must not leave the drop folder", connector=self.name
            )
        try:
            files = sorted(self.directory.glob(pattern))
            if files and (files[-1].is_symlink() or not files[-1].is_file()):
                # A link or FIFO could make us read a gateway-local file or block forever.
                raise UnsafeContent("newest export is not a regular file", connector=self.name)
        except OSError as exc:
            raise ConnectorUnavailable("drop folder unreadable", connector=self.name) from exc
        if not files:
            raise ConnectorUnavailable("no export in the drop folder", connector=self.name)
        return files[-1]

    async def _load(self, spec: EntitySpec, ctx: FetchContext | None) -> _Index:
        async def op(deadline: Deadline) -> _Index:
            path = self._latest(spec)
            st = path.stat()
            stamp = (str(path), st.st_size, st.st_mtime_ns)
            cached = self._index.get(spec.name)
            if cached is not None and cached.stamp == stamp:
                return cached
            async with self._lock:
                if st.st_size > self.settings.max_response_bytes:
                    raise ResponseTooLarge("export exceeds the byte cap", connector=self.name)
                index = await asyncio.to_thread(self._parse, spec, path, stamp, deadline)
                self._index[spec.name] = index
                return index

        result: _Index = await self.resilience.call(op, idempotent=True, ctx=ctx)
        return result

    def _parse(
        self, spec: EntitySpec, path: Path, stamp: tuple[str, int, int], deadline: Deadline
    ) -> _Index:
        cap = self.settings.max_response_bytes
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise ConnectorUnavailable("export unreadable", connector=self.name) from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeContent("export is not a regular file", connector=self.name)
            with os.fdopen(fd, "rb") as fh:
                fd = -1
                raw = fh.read(cap + 1)
        except OSError as exc:
            raise ConnectorUnavailable("export unreadable", connector=self.name) from exc
        finally:
            if fd >= 0:
                os.close(fd)
        if len(raw) > cap:
            raise ResponseTooLarge("export exceeds the byte cap", connector=self.name)
        if b"\x00" in raw:
            raise ConnectorBadResponse("export contains NUL bytes", connector=self.name)
        try:
            text = raw.decode(str(spec.options.get("encoding", "utf-8-sig")))
        except (UnicodeDecodeError, LookupError) as exc:
            raise ConnectorBadResponse(
                "export is not in its declared encoding", connector=self.name
            ) from exc
        reader = csv.reader(
            io.StringIO(text, newline=""),
            delimiter=str(spec.options.get("delimiter", ",")),
            strict=True,
        )
        try:
            header = tuple(next(reader))
        except StopIteration:
            raise ConnectorBadResponse("export is empty", connector=self.name) from None
        except csv.Error as exc:
            raise ConnectorBadResponse("export header is malformed", connector=self.name) from exc
        missing = [c for c in (spec.key, *spec.fields) if c not in header]
        if missing or len(set(header)) != len(header):
            raise ConnectorBadResponse(
                "export header does not match the config", connector=self.name
            )
        rows: list[dict[str, str]] = []
        by_key: dict[str, int] = {}
        key_col = header.index(spec.key)
        try:
            for line in reader:
                if not line:
                    continue
                if len(line) != len(header) or any(len(c) > _MAX_FIELD for c in line):
                    raise ConnectorBadResponse(
                        f"export row {reader.line_num} is malformed", connector=self.name
                    )
                if len(rows) >= self.max_rows:
                    raise ResponseTooLarge("export has too many rows", connector=self.name)
                if deadline.expired():
                    raise ConnectorTimeout("export took too long to read", connector=self.name)
                if line[key_col] in by_key:
                    raise ConnectorBadResponse(
                        f"duplicate key at row {reader.line_num}", connector=self.name
                    )
                by_key[line[key_col]] = len(rows)
                rows.append(dict(zip(header, line, strict=True)))
        except csv.Error as exc:
            raise ConnectorBadResponse("export is not valid CSV", connector=self.name) from exc
        return _Index(stamp, header, tuple(rows), by_key)
