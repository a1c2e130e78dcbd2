"""Find canonical model schemas (``person@1``) in ``schemas/canonical/``.

A model name maps to the schema whose ``$id`` is
``urn:accord:schema:canonical:<model>:<major>`` (docs/conventions.md), so file
names are free and two majors of a model can live side by side.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.interface import MappingError

__all__ = [
    "CANONICAL_DIR",
    "canonical_models",
    "canonical_schema",
    "classification_of",
    "shipped_schemas",
]

CANONICAL_DIR = Path(__file__).resolve().parents[2] / "schemas" / "canonical"
_PREFIX = "urn:accord:schema:canonical:"


@functools.cache
def _index(directory: Path) -> Mapping[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for path in sorted(directory.glob("*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        sid = str(schema.get("$id", ""))
        if sid.startswith(_PREFIX):
            model, _, major = sid[len(_PREFIX) :].rpartition(":")
            out[f"{model}@{major}"] = schema
    return out


def canonical_models(directory: Path | None = None) -> tuple[str, ...]:
    return tuple(sorted(_index(directory or CANONICAL_DIR)))


def canonical_schema(model: str, directory: Path | None = None) -> Mapping[str, Any]:
    """The JSON Schema of ``model`` (e.g. ``person@1``)."""
    try:
        return _index(directory or CANONICAL_DIR)[model]
    except KeyError:
        raise MappingError(f"no canonical schema for {model!r}") from None


def shipped_schemas(directory: Path | None = None) -> tuple[Mapping[str, Any], ...]:
    """Every canonical schema: the only documents a target schema's ``$ref`` may name
    besides itself (by its ``$id``; nothing is ever fetched)."""
    return tuple(_index(directory or CANONICAL_DIR).values())


def classification_of(model: str, directory: Path | None = None) -> dict[str, Any]:
    """Field name → its ``x-accord-classification`` label (top-level properties)."""
    props = canonical_schema(model, directory).get("properties", {})
    return {name: p.get("x-accord-classification") for name, p in props.items()}
