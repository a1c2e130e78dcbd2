"""Check a mapping's target JSON Schema once, and build its validator offline.

A consumer's own schema is written by an administrator and stored with the
spec, so it is input like any other: it must be valid Draft 2020-12, every
regular expression in it must compile as the validator will read it, and every
``$ref`` must resolve inside the document or to a shipped canonical schema (by
its ``$id``). jsonschema, given no ``registry``,
falls back to fetching unknown references over the network on each
validation; the validator built here has a registry that retrieves nothing, and
a reference it could not resolve is refused now, when the spec compiles,
rather than failing (or fetching) on an exchange.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import referencing.exceptions
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from connectors.interface import MappingError
from connectors.mapping.canonical import shipped_schemas
from connectors.mapping.standard_pattern import Validator, standard_regex

__all__ = ["target_validator", "verify_target_schema"]

_REFS = ("$ref", "$dynamicRef")


def _nothing(uri: str) -> Resource:
    """The registry's retrieval: every reference outside the document is refused."""
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


@functools.cache
def _shipped(schemas_dir: Path | None) -> Registry[Any]:
    registry: Registry[Any] = Registry(retrieve=_nothing)  # type: ignore[call-arg]
    resources = [DRAFT202012.create_resource(s) for s in shipped_schemas(schemas_dir)]
    return registry.with_resources((r.id() or "", r) for r in resources if r.id())


def _registry(
    schema: Mapping[str, Any], schemas_dir: Path | None
) -> tuple[Registry[Any], Resource]:
    resource = DRAFT202012.create_resource(schema)
    return _shipped(schemas_dir).with_resource(resource.id() or "", resource), resource


def _nodes(resolver: Any, resource: Resource) -> Iterator[tuple[Any, Mapping[str, Any]]]:
    """Every subschema object with the resolver its references resolve against."""
    if isinstance(resource.contents, Mapping):
        yield resolver, resource.contents
    for sub in resource.subresources():
        yield from _nodes(resolver.in_subresource(sub), sub)


def verify_target_schema(
    schema: Mapping[str, Any], label: str, schemas_dir: Path | None = None
) -> None:
    """Raise ``MappingError`` unless ``schema`` is valid, its regexes compile and its
    references stay inside it. ``label`` names the schema in the message."""
    if not isinstance(schema, Mapping):
        raise MappingError(f"target schema {label} is not a JSON Schema object")
    try:
        Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise MappingError(
            f"target schema {label} is not valid JSON Schema at {where}: {exc.validator} check"
        ) from None
    registry, root = _registry(schema, schemas_dir)
    for resolver, node in _nodes(registry.resolver(base_uri=root.id() or ""), root):
        pattern = node.get("pattern")
        patterns = [pattern] if isinstance(pattern, str) else []
        try:
            for regex in patterns:
                re.compile(standard_regex(regex))
            for regex in node.get("patternProperties") or {}:
                re.compile(regex)
        except (re.error, TypeError):
            raise MappingError(
                f"target schema {label} holds a pattern that does not compile"
            ) from None
        for keyword in _REFS:
            ref = node.get(keyword)
            if ref is None:
                continue
            try:
                resolver.lookup(ref)
            except referencing.exceptions.Unresolvable:
                raise MappingError(
                    f"target schema {label}: {keyword} {ref!r} does not resolve inside the "
                    "schema or to a canonical schema (references are never fetched)"
                ) from None


def target_validator(
    schema: Mapping[str, Any], schemas_dir: Path | None = None
) -> jsonschema.Draft202012Validator:
    """The validator for a schema ``verify_target_schema`` accepted; it never retrieves."""
    registry, _ = _registry(schema, schemas_dir)
    return Validator(
        schema,
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
