"""Values a spec writes whatever the record holds, checked against the target when compiling.

A ``const``, a ``default`` and the values of the last ``lookup`` of a rule come
from the spec, not from the provider. One that the target schema refuses (a
``const`` outside a closed enum, a code list mapping to a value the model does
not know) would fail every record that reaches it, and the exchange would
blame the provider's system; so it is an error of the spec, found here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jsonschema

from connectors.interface import MappingError
from connectors.mapping.steps import StepFailed, compile_step

__all__ = ["verify_fixed_values"]

Path = tuple[str | int, ...]


def _lookup_outputs(
    rule: Mapping[str, Any], codelists: Mapping[str, Any], name: str
) -> Iterator[tuple[str, Any]]:
    """What the rule's last lookup can give, through the steps after it."""
    steps: Sequence[Any] = rule.get("steps", [])
    lookups = [i for i, s in enumerate(steps) if isinstance(s, dict) and "lookup" in s]
    last = max(lookups, default=-1)
    if last < 0:
        return
    table = steps[last]["lookup"]
    if isinstance(table, str):
        table = codelists.get(table, {})
    after = [compile_step(s, codelists) for s in steps[last + 1 :]]
    for value in table.values():
        try:
            for step in after:
                value = step(value)
        except StepFailed:
            continue  # such a code fails its records as a mapping_error, naming the field
        yield "lookup", value


def _fixed(
    rule: Mapping[str, Any], codelists: Mapping[str, Any], name: str
) -> Iterator[tuple[str, Any]]:
    const = rule.get("const")
    if const is not None and const != "":  # null or "" emits nothing (the field is missing)
        yield "const", const
    if "default" in rule:
        yield "default", rule["default"]
    yield from _lookup_outputs(rule, codelists, name)


def _nest(path: Path, value: Any) -> Any:
    for part in reversed(path):
        value = [value] if isinstance(part, int) else {part: value}
    return value


def _check(
    validator: jsonschema.Draft202012Validator, path: Path, name: str, kind: str, value: Any
) -> None:
    for error in validator.iter_errors(_nest(path, value)):
        if error.validator == "required":
            continue  # only this one field is present
        if tuple(error.absolute_path)[: len(path)] == path:
            raise MappingError(
                f"{name}: a {kind} value does not fit the target ({error.validator} check failed)"
            )


def _walk(
    fields: Mapping[str, Any],
    codelists: Mapping[str, Any],
    validator: jsonschema.Draft202012Validator,
    prefix: Path,
    where: str,
) -> None:
    for target, rule in fields.items():
        path: Path = prefix + tuple(target.split("."))
        name = f"{where}.{target}" if where else target
        seen: set[tuple[type, Any]] = set()
        for kind, value in _fixed(rule, codelists, name):
            key = (type(value), value)
            if key not in seen:
                seen.add(key)
                _check(validator, path, name, kind, value)
        if "each" in rule:
            _walk(rule["each"]["fields"], codelists, validator, (*path, 0), name + "[]")


def verify_fixed_values(
    spec: Mapping[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    """Raise ``MappingError`` naming the field when a value the spec itself writes
    does not fit the target schema (``required`` aside: the field stands alone)."""
    _walk(spec["fields"], spec.get("codelists", {}), validator, (), "")
