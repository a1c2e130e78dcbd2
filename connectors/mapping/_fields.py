"""Compiled field rules (internal): each spec rule becomes one plain closure.

``compile_fields`` turns the ``fields`` map of a validated spec into a tuple
of (name, target path, value function, required) and ``apply_fields`` runs
them over a record. Nothing here interprets text at mapping time: paths are
split, steps looked up and conditions bound once, when the spec compiles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.interface import MappingError
from connectors.mapping.steps import Step, StepFailed, StepSpecInvalid, compile_step

__all__ = ["MISSING", "Field", "Getter", "apply_fields", "compile_fields"]

MISSING: Any = object()
Getter = Callable[[Mapping[str, Any]], Any]


def _getter(path: str) -> Getter:
    parts = tuple(int(p) if p.isdigit() else p for p in path.split("."))
    if len(parts) == 1 and isinstance(parts[0], str):
        key = parts[0]

        def get_one(rec: Mapping[str, Any]) -> Any:
            return rec.get(key, MISSING)

        return get_one

    def get_path(rec: Mapping[str, Any]) -> Any:
        cur: Any = rec
        for p in parts:
            if isinstance(p, int) and isinstance(cur, list):
                if p >= len(cur):
                    return MISSING
                cur = cur[p]
            elif isinstance(cur, Mapping) and p in cur:
                cur = cur[p]
            else:
                return MISSING
        return cur

    return get_path


def _condition(cond: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    get = _getter(cond["field"])
    if "equals" in cond:
        want = cond["equals"]
        return lambda rec: get(rec) == want
    if "not_equals" in cond:
        avoid = cond["not_equals"]
        return lambda rec: get(rec) != avoid
    if "in" in cond:
        allowed = list(cond["in"])
        return lambda rec: get(rec) in allowed
    present = bool(cond["present"])
    return lambda rec: (get(rec) not in (MISSING, None, "")) == present


def _source(
    rule: Mapping[str, Any], codelists: Mapping[str, Any], where: str, depth: int
) -> Getter:
    if "from" in rule:
        return _getter(rule["from"])
    if "const" in rule:
        value = rule["const"]
        return lambda rec: value
    if "concat" in rule:
        parts = [
            (_getter(p["from"]) if "from" in p else None, p.get("const"))
            for p in rule["concat"]["parts"]
        ]
        sep = rule["concat"].get("separator", "")

        def concat(rec: Mapping[str, Any]) -> Any:
            out = []
            for get, const in parts:
                v = const if get is None else get(rec)
                if v is MISSING or v is None or v == "":
                    continue
                out.append(v if isinstance(v, str) else str(v))
            return sep.join(out) if out else MISSING

        return concat
    if depth >= 3:
        raise MappingError(f"{where}: 'each' nests too deep")
    get_list = _getter(rule["each"]["from"])
    inner = compile_fields(rule["each"]["fields"], codelists, where + "[]", depth + 1)

    def each(rec: Mapping[str, Any]) -> Any:
        items = get_list(rec)
        if items is MISSING or items is None:
            return MISSING
        if not isinstance(items, list):
            raise StepFailed("each: source is not a list")
        return [apply_fields(inner, item if isinstance(item, Mapping) else {}) for item in items]

    return each


Field = tuple[str, tuple[str, ...], Getter, bool]


def _compile_rule(
    target: str, name: str, rule: Mapping[str, Any], codelists: Mapping[str, Any], depth: int
) -> Field:
    source = _source(rule, codelists, name, depth)
    try:
        steps: tuple[Step, ...] = tuple(compile_step(s, codelists) for s in rule.get("steps", []))
    except StepSpecInvalid as exc:
        raise MappingError(f"{name}: {exc}") from None
    default = rule.get("default", MISSING)
    when = _condition(rule["when"]) if "when" in rule else None
    required = bool(rule.get("required", False))

    return name, tuple(target.split(".")), _value(source, steps, default, when), required


def _value(
    source: Getter,
    steps: tuple[Step, ...],
    default: Any,
    when: Callable[[Mapping[str, Any]], bool] | None,
) -> Getter:
    """One field's function, specialised for the common shapes (a plain copy, one step)."""
    if when is None and not steps:

        def copy(rec: Mapping[str, Any]) -> Any:
            v = source(rec)
            return default if v is MISSING or v is None or v == "" else v

        return copy
    if when is None and len(steps) == 1:
        (only,) = steps

        def one_step(rec: Mapping[str, Any]) -> Any:
            v = source(rec)
            return default if v is MISSING or v is None or v == "" else only(v)

        return one_step

    def general(rec: Mapping[str, Any]) -> Any:
        if when is not None and not when(rec):
            return MISSING
        v = source(rec)
        if v is MISSING or v is None or v == "":
            return default
        for step in steps:
            v = step(v)
        return v

    return general


def compile_fields(
    fields: Mapping[str, Any], codelists: Mapping[str, Any], where: str, depth: int
) -> tuple[Field, ...]:
    for target in fields:
        parts = target.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in fields:
                # "a" as a value and "a.b" inside an object cannot both be written.
                name = f"{where}.{target}" if where else target
                raise MappingError(f"{name}: target clashes with {prefix!r}")
    return tuple(
        _compile_rule(t, f"{where}.{t}" if where else t, r, codelists, depth)
        for t, r in fields.items()
    )


def apply_fields(fields: Sequence[Field], rec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path, value, required in fields:
        try:
            v = value(rec)
        except StepFailed as exc:
            raise MappingError(f"{name}: {exc}") from None
        if v is MISSING:
            if required:
                raise MappingError(f"{name}: required value is missing")
            continue
        if len(path) == 1:
            out[path[0]] = v
        else:
            node = out
            for p in path[:-1]:
                node = node.setdefault(p, {})
            node[path[-1]] = v
    return out
