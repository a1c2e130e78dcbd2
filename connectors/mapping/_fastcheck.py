"""A ``jsonschema_rs`` pre-check with the same yes/no as a mapping's jsonschema validator.

``CompiledMapping.validate`` asks this first and stops when it says valid; on any
other answer it runs the jsonschema validator, which stays the authority and the
only source of error messages. So the pre-check must be *sound*: whenever it says
valid, jsonschema (ignoring ``required`` errors in partial mode) says valid too.
Three rules make it so, and a mapping outside them gets no pre-check at all:

* **Schema.** Only the keywords in ``_ASSERTIONS``, ``_DELEGATED`` and the
  applicators ``properties``, ``additionalProperties``, ``items``,
  ``prefixItems`` and ``allOf``; ``$schema`` (2020-12 only), ``$id`` and ``$defs``
  at the root and ``$ref`` to ``#`` or ``#/$defs/<name>``; annotations and
  ``x-`` keywords are dropped. jsonschema
  reports a failure under those applicators with the failing keyword itself
  (they descend without wrapping), and none of them looks at whether a
  subschema passed. So "ignore errors whose keyword is ``required``" accepts
  exactly what the schema with every ``required`` deleted accepts, and the
  partial validator is compiled from that. Under ``anyOf``, ``oneOf``, ``not``,
  ``if`` or ``contains`` a missing field is reported as the combinator's
  failure and is not ignored, which deleting ``required`` would change: those
  schemas stay on jsonschema. References are in-document only here (the
  mapping's validator resolves nothing else but the shipped canonical schemas,
  and retrieves nothing: ``_target_schema``), so both libraries resolve them alike.
* **Regex dialect and formats.** ``pattern`` and ``format`` are not left to
  ``jsonschema_rs``: it calls the mapping validator's own keyword functions
  (``pattern`` as JSON Schema reads it, ``standard_pattern``) with the very
  format checker that validator uses (it asserts formats), never the Rust ones.
* **Values.** Only exact JSON types go to ``jsonschema_rs``: ``dict`` with
  ``str`` keys, ``list``, ``str``, ``bool``, ``None``, ``int`` within 2**53 and
  finite ``float``. It takes a tuple for an array and a ``Decimal`` for an
  integer where jsonschema does not, so anything else goes to jsonschema.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jsonschema

from connectors.mapping.standard_pattern import Validator as StandardValidator

if TYPE_CHECKING:
    from jsonschema_rs import Validator

__all__ = ["FastCheck", "fast_check"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_ASSERTIONS = frozenset(
    {
        "type", "enum", "const", "required",
        "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minItems", "maxItems", "minProperties", "maxProperties",
    }
)  # fmt: skip
_DELEGATED = ("format", "pattern")
_ANNOTATIONS = frozenset(
    {"title", "description", "$comment", "default", "examples", "deprecated", "readOnly",
     "writeOnly"}
)  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_EXACT_INT = 2**53  # every int up to here is also an exact float, whichever the Rust side compares
_MAX_DEPTH = 32


class _Outside(Exception):
    """The schema is outside the rule; the mapping keeps jsonschema alone."""


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON that both libraries read the same way."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_EXACT_INT <= value <= _EXACT_INT)
    if kind is float:
        return math.isfinite(value)
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) is not str and not _plain(item, depth + 1)):
                return False
        return True
    if kind is list:
        return all(_plain(item, depth + 1) for item in value)
    return False


def _subschemas(value: Any, defs: frozenset[str], strip: bool) -> list[Any]:
    if not isinstance(value, list):
        raise _Outside("a list of subschemas is not a list")
    return [_copy(item, defs, strip) for item in value]


def _copy(schema: Any, defs: frozenset[str], strip: bool) -> Any:
    """The schema for ``jsonschema_rs``: checked against the rule, ``required`` gone if ``strip``.

    ``defs`` holds the ``$ref`` values allowed, ``#/$defs/<name>`` for each root definition.
    """
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, Mapping):
        raise _Outside("a subschema is not an object")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if not isinstance(key, str):
            raise _Outside("a keyword is not a string")
        if key in ("additionalProperties", "items"):
            out[key] = _copy(value, defs, strip)
        elif key in ("allOf", "prefixItems"):
            out[key] = _subschemas(value, defs, strip)
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise _Outside("properties is not an object")
            out[key] = {name: _copy(sub, defs, strip) for name, sub in value.items()}
        elif key == "$ref":
            if not isinstance(value, str) or (value != "#" and value not in defs):
                raise _Outside(f"$ref {value!r} is not '#' or '#/$defs/<name>'")
            out[key] = value
        elif key in _ASSERTIONS or key in _DELEGATED:
            if not _plain(value):
                raise _Outside(f"{key} holds a value that is not plain JSON")
            if not (strip and key == "required"):
                out[key] = value
        elif key not in _ANNOTATIONS and not key.startswith("x-"):
            raise _Outside(f"keyword {key!r}")
    return out


def _rs_schema(root: Mapping[str, Any], strip: bool) -> dict[str, Any]:
    body = dict(root)
    if body.pop("$schema", _DIALECT) != _DIALECT:
        raise _Outside("not a draft 2020-12 schema")
    base = body.pop("$id", "")
    if not isinstance(base, str) or "#" in base:
        raise _Outside("$id is not a plain URI")
    defs = body.pop("$defs", {})
    if not isinstance(defs, Mapping):
        raise _Outside("$defs is not an object")
    # names needing no escaping in a pointer or a URI, so both libraries read the $ref alike
    refs = frozenset(f"#/$defs/{n}" for n in defs if isinstance(n, str) and _NAME.fullmatch(n))
    out: dict[str, Any] = _copy(body, refs, strip)
    if defs:
        out["$defs"] = {name: _copy(sub, refs, strip) for name, sub in defs.items()}
    return out


def _delegate(keyword: str, validator: jsonschema.Draft202012Validator) -> type:
    """A ``jsonschema_rs`` keyword that fails exactly when jsonschema's own keyword does."""
    check: Callable[..., Iterable[Exception]] = validator.VALIDATORS[keyword]

    class Delegated:
        __slots__ = ("_schema", "_value")

        def __init__(self, parent: dict[str, Any], value: Any, _path: list[str | int]) -> None:
            self._schema = parent
            self._value = value

        def validate(self, instance: Any) -> None:
            for error in check(validator, self._value, instance, self._schema):
                raise error

    return Delegated


class FastCheck:
    """Compiled ``jsonschema_rs`` validators for the full and the partial answer."""

    __slots__ = ("_full", "_partial")

    def __init__(self, full: Validator, partial: Validator) -> None:
        self._full = full
        self._partial = partial

    def accepts(self, output: Any, *, partial: bool) -> bool:
        """``True``: jsonschema accepts ``output`` too. ``False``: ask jsonschema."""
        if not _plain(output):
            return False
        try:
            return (self._partial if partial else self._full).is_valid(output)
        except Exception:  # whatever it cannot take (a lone surrogate), jsonschema judges
            return False


def fast_check(validator: jsonschema.Draft202012Validator) -> FastCheck | None:
    """The pre-check for ``validator``; ``None`` without ``jsonschema_rs`` or outside the rule."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    schema = validator.schema
    if type(validator) is not StandardValidator or not isinstance(schema, Mapping):
        return None
    keywords = {k: _delegate(k, validator) for k in _DELEGATED}

    def compiled(strip: bool) -> Validator:
        return jsonschema_rs.Draft202012Validator(
            _rs_schema(schema, strip),
            keywords=keywords,
            validate_formats=False,  # ``format`` is the delegated keyword, never Rust's own
            offline=True,
        )

    try:
        return FastCheck(compiled(strip=False), compiled(strip=True))
    except (_Outside, ValueError, jsonschema_rs.ReferencingError):  # ValueError: a bad schema
        return None
