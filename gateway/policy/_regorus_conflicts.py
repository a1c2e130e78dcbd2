"""Conflict guards for regorus' VM: what OPA reports as ``eval_conflict_error``, made visible.

OPA and regorus' interpreter fail on a conflict: a complete rule or function
that yields two different values for one input, or a partial object rule
that yields two values for one key. regorus 0.13's VM does not: it makes a
conflicting complete rule or function *undefined*, and lets a partial object
keep one of the values. Undefined is not a deny: under ``not``, ``else``,
``default`` or inside a comprehension it can turn into an allow, so the VM
could release a field that OPA refuses.

So before a version is compiled for the VM its rules are sorted:

* **cannot conflict** (nothing to do): every definition of the rule yields the
  same constant (``f(x) if …`` twice, ``p[k] := "x"``), or there is exactly
  one definition and each of its bodies has at most one solution (no ``some``,
  no ``_``, no index by an unbound variable, no ``walk``);
* **guarded** (complete rules without ``else``, partial object rules): each
  definition is copied, body unchanged and in its own module (so its imports
  and scoping are those of the original), as one definition of a partial *set*
  collecting its values (or ``[key, value]`` pairs). Partial sets cannot
  conflict, and the VM evaluates them correctly. The compiled entry point
  returns the decision together with the names of the rules whose collected
  values conflict; ``run_vm`` raises ``VmConflict`` when any does, and the
  engine hands that input to the interpreter, which fails closed as OPA does;
* **unguardable** (a function with several definitions whose values can
  differ, a function or ``else`` chain whose bodies can have several
  solutions): a guard would have to know every argument a function is called
  with, so ``guard_sources`` raises ``VmUnguardable`` and the version is
  interpreted. This depends on the sources alone, so a version's engine never
  changes from one load to the next for this reason.

A guard is stricter than OPA in one respect: it checks every guarded rule,
including one the decision does not use, so a conflict OPA would never
evaluate still fails that decision closed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import regorus

__all__ = [
    "CONFLICTS_KEY",
    "DECISION_KEY",
    "GUARD_PREFIX",
    "VmConflict",
    "VmUnguardable",
    "guard_sources",
]

Sources = tuple[tuple[str, str], ...]

#: Every name the guards add starts with this; a bundle that already uses it is interpreted.
GUARD_PREFIX = "accord_vm_"
DECISION_KEY = "decision"
CONFLICTS_KEY = "conflicts"
_ENTRY_MODULE = "accord_vm_conflict_guards.rego"
_COMPREHENSIONS = {"ArrayCompr", "SetCompr", "ObjectCompr"}
#: What ``_constant`` answers for a value that is not a ground constant.
_NOT_CONSTANT = "\x00not a constant"


class VmConflict(RuntimeError):
    """The VM evaluated a guarded rule to conflicting values: no decision from the VM."""


class VmUnguardable(RuntimeError):
    """A rule of this version could conflict and no guard can see it: interpret the version."""


@dataclass
class _Definition:
    module: int
    head: tuple[int, int]  # where the head is written: from the rule's start to its first body
    key: str | None  # partial object rules: the key expression's text
    values: list[Any]  # the AST value of each body (else branches included)
    value_texts: list[str]
    bodies: list[str]  # each body's query text ("" when there is none)
    single: list[bool]  # each body has at most one solution
    has_else: bool


@dataclass
class _Group:
    package: str
    name: str  # the rule's head reference as written, e.g. input_problems
    kind: str  # complete | function | object
    definitions: list[_Definition] = field(default_factory=list)
    defaults: int = 0


@dataclass(frozen=True)
class GuardedSources:
    """What the VM compiles: the sources plus guards, and the entry point to ask."""

    sources: Sources
    entry: str
    guarded: tuple[str, ...]


def guard_sources(sources: Sources, decision_query: str) -> GuardedSources:
    """``sources`` plus the conflict guards; raises ``VmUnguardable`` (see the module docstring)."""
    engine = regorus.Engine()
    for path, text in sources:
        engine.add_policy(path, text)
    modules = json.loads(engine.get_ast_as_json())
    del engine
    texts = [m["source"]["contents"] for m in modules]
    globals_ = {"input", "data"} | set(_imported_names(modules, texts))
    groups: dict[tuple[str, str, str], _Group] = {}
    for module in modules:
        for rule in module["ast"]["rules"]:
            globals_.add(_rule_root(rule))
    for index, module in enumerate(modules):
        package = _text(texts[index], module["ast"]["package"]["refr"])
        for rule in module["ast"]["rules"]:
            _collect(groups, package, index, texts[index], rule, globals_)
    if any(name.startswith(GUARD_PREFIX) for name in globals_):
        raise VmUnguardable(f"the bundle already uses names starting with {GUARD_PREFIX}")
    heads: dict[int, list[tuple[tuple[int, int], str]]] = {}
    derived: dict[str, list[str]] = {}
    checks: list[str] = []
    guarded: list[str] = []
    for number, group in enumerate(sorted(groups.values(), key=lambda g: (g.package, g.name))):
        if _cannot_conflict(group):
            continue
        if group.kind == "function" or any(d.has_else for d in group.definitions):
            raise VmUnguardable(
                f"{group.package}.{group.name} may yield conflicting values and the VM"
                " cannot check it (a function, or an else chain, with several definitions"
                " or several solutions)"
            )
        collector = f"{GUARD_PREFIX}values_{number}"
        label = json.dumps(f"{group.package}.{group.name}")
        for d in group.definitions:
            if _NOT_CONSTANT in (d.value_texts[0], d.key) or not d.bodies[0]:
                raise VmUnguardable(
                    f"{group.package}.{group.name} may yield conflicting values and has a"
                    " definition without a body, which the VM's guard cannot copy"
                )
            # Each value is wrapped in an array: regorus' VM adds the string
            # "<undefined>" to a set for an element it cannot evaluate, and the
            # checks below count arrays only.
            element = (
                f"[{d.key}, {d.value_texts[0]}]"
                if group.kind == "object"
                else f"[{d.value_texts[0]}]"
            )
            heads.setdefault(d.module, []).append((d.head, f"{collector} contains {element} "))
        # The rule itself is then read off its collected values, so each body is
        # evaluated once, as before.
        found = f"{GUARD_PREFIX}found_{number}"
        rules = [f"{found} := {{e | some e in {collector}; is_array(e)}}"]
        if group.kind == "object":
            rules.append(f"{group.name} := {{pair[0]: pair[1] | some pair in {found}}}")
        else:
            rules.append(
                f"{group.name} := only[0] if {{\n\tcount({found}) == 1\n\tsome only in {found}\n}}"
            )
        derived.setdefault(group.package, []).extend(rules)
        found = f"data.{group.package}.{found}"
        if group.kind == "object":
            checks.append(
                f"{GUARD_PREFIX}conflicts contains {label} if {{\n\tfound := {found}\n"
                "\tcount(found) != count({p[0] | some p in found})\n}"
            )
        else:
            checks.append(f"{GUARD_PREFIX}conflicts contains {label} if count({found}) > 1")
        guarded.append(f"{group.package}.{group.name}")
    package, _, rule = decision_query.removeprefix("data.").rpartition(".")
    entry_name = f"{GUARD_PREFIX}entry"
    conflicts = f"{GUARD_PREFIX}conflicts" if checks else "set()"
    entry_text = "\n\n".join(
        [
            f"package {package}",
            f'{entry_name} := {{"{DECISION_KEY}": {rule}, "{CONFLICTS_KEY}": {conflicts}}}',
            *checks,
        ]
    )
    out = [
        (path, _rewrite_heads(text, heads.get(i, [])))
        for i, (path, text) in enumerate(_in_ast_order(sources, modules))
    ]
    for n, (pkg, rules) in enumerate(sorted(derived.items())):
        out.append((f"accord_vm_rebuilt_{n}.rego", "\n\n".join([f"package {pkg}", *rules]) + "\n"))
    out.append((_ENTRY_MODULE, entry_text + "\n"))
    return GuardedSources(tuple(out), f"data.{package}.{entry_name}", tuple(guarded))


def _rewrite_heads(text: str, heads: list[tuple[tuple[int, int], str]]) -> str:
    """``text`` with each (start, end) range replaced; bodies and line numbers stay put."""
    for (start, end), head in sorted(heads, reverse=True):
        text = text[:start] + head + text[end:]
    return text


def _in_ast_order(sources: Sources, modules: Sequence[Any]) -> list[tuple[str, str]]:
    """The sources in the order regorus lists the modules (the AST indexes them so)."""
    by_path = dict(sources)
    return [(m["source"]["file"], by_path[m["source"]["file"]]) for m in modules]


def _cannot_conflict(group: _Group) -> bool:
    values = [_constant(v) for d in group.definitions for v in d.values]
    if _NOT_CONSTANT not in values and len({json.dumps(v) for v in values}) == 1:
        return True  # every definition yields the same constant
    if group.kind == "object" or len(group.definitions) != 1:
        return False
    d = group.definitions[0]
    return all(s or _constant(v) != _NOT_CONSTANT for s, v in zip(d.single, d.values, strict=True))


def _constant(node: Any) -> Any:
    """The node's JSON value when it is a ground constant, else the marker string."""
    kind, body = next(iter(node.items()))
    if kind in ("String", "Number", "Bool"):
        return body["value"]
    if kind == "Null":
        return None
    if kind in ("Array", "Set"):
        items = [_constant(i) for i in body["items"]]
        if _NOT_CONSTANT in items:
            return _NOT_CONSTANT
        return items if kind == "Array" else sorted(json.dumps(i) for i in items)
    return _NOT_CONSTANT


def _collect(
    groups: dict[tuple[str, str, str], _Group],
    package: str,
    module: int,
    text: str,
    rule: Any,
    globals_: set[str],
) -> None:
    kind, spec = next(iter(rule.items()))
    if kind == "Default":
        key = (package, _text(text, spec["refr"]), "function" if spec["args"] else "complete")
        groups.setdefault(key, _Group(package, key[1], key[2])).defaults += 1
        return
    head_kind, head = next(iter(spec["head"].items()))
    if head_kind == "Set":
        return  # partial sets (`contains`) cannot conflict
    bound: set[str] = set()
    key_text: str | None = None
    if head_kind == "Func":
        group_kind, name = "function", _text(text, head["refr"])
        for arg in head["args"]:
            bound |= set(_vars(arg))
    else:
        refr_kind, refr = next(iter(head["refr"].items()))
        if refr_kind == "RefBrack":
            group_kind, name = "object", _text(text, refr["refr"])
            # regorus' spans of brackets and strings leave out the closing
            # bracket and the quotes: cut the key out of the head's own text.
            key_end = head["assign"]["span"]["start"] if head["assign"] else _head_end(head, spec)
            ref_text = text[_span(refr["refr"])["end"] : key_end].strip()
            key_text = ref_text.removeprefix("[").removesuffix("]").strip()
        else:
            group_kind, name = "complete", _text(text, head["refr"])
    assign = head.get("assign")
    first_value = assign["value"] if assign else {"Bool": {"value": True}}
    first_text = _assigned_text(text, assign, _head_end(head, spec)) if assign else "(true)"
    values, value_texts, bodies, single = [first_value], [first_text], [], []
    for n, body in enumerate(spec["bodies"] or [None]):
        if n > 0:
            else_value = body["assign"]["value"] if body["assign"] else {"Bool": {"value": True}}
            values.append(else_value)
        query = body["query"] if body else None
        bodies.append(_text(text, query) if query else "")
        single.append(query is None or _single_solution(query, set(bound), globals_))
    head_span = (int(spec["span"]["start"]), _head_end(head, spec) or -1)
    definition = _Definition(
        module,
        head_span,
        key_text,
        values,
        value_texts,
        bodies,
        single,
        len(spec["bodies"] or []) > 1,
    )
    group = groups.setdefault((package, name, group_kind), _Group(package, name, group_kind))
    group.definitions.append(definition)


def _single_solution(query: Any, bound: set[str], globals_: set[str]) -> bool:
    """Whether a body has at most one solution (conservatively: False when unsure)."""
    for stmt in query["stmts"]:
        kind, literal = next(iter(stmt["literal"].items()))
        if kind in ("SomeIn", "SomeVars"):
            return False
        if kind == "NotExpr":
            continue  # binds nothing, yields one solution or none
        node = literal.get("expr", literal)
        if kind == "Every":
            node = literal.get("domain", {})
        if not _lookups_only(node, bound, globals_):
            return False
        if kind == "Expr":
            expr_kind, expr = next(iter(literal["expr"].items()))
            if expr_kind == "AssignExpr" or (expr_kind == "BoolExpr" and expr["op"] == "Eq"):
                bound |= set(_vars(expr["lhs"])) | set(_vars(expr["rhs"]))
    return True


def _lookups_only(node: Any, bound: set[str], globals_: set[str]) -> bool:
    """No ``_``, no index by an unbound variable, no ``walk`` outside comprehensions."""
    for kind, body in _nodes(node):
        if kind == "RefBrack":
            index_kind, index = next(iter(body["index"].items()))
            if index_kind == "Var" and (
                index["value"] == "_" or index["value"] not in bound | globals_
            ):
                return False
        if kind == "Var" and body["value"] == "_":
            return False
        if kind == "Call":
            fcn_kind, fcn = next(iter(body["fcn"].items()))
            if fcn_kind == "Var" and fcn["value"] == "walk":
                return False
    return True


def _nodes(node: Any) -> Iterator[tuple[str, Any]]:
    """Every AST node under ``node``, not descending into comprehensions."""
    if isinstance(node, list):
        for item in node:
            yield from _nodes(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key[:1].isupper():
            if key in _COMPREHENSIONS:
                continue
            yield key, value
        yield from _nodes(value)


def _vars(node: Any) -> Iterator[str]:
    for kind, body in _nodes(node):
        if kind == "Var":
            yield body["value"]


def _rule_root(rule: Any) -> str:
    kind, spec = next(iter(rule.items()))
    refr = spec["refr"] if kind == "Default" else next(iter(spec["head"].values()))["refr"]
    while True:
        refr_kind, body = next(iter(refr.items()))
        if refr_kind == "Var":
            return str(body["value"])
        refr = body["refr"]


def _imported_names(modules: Sequence[Any], texts: Sequence[str]) -> Iterator[str]:
    for module, text in zip(modules, texts, strict=True):
        for imp in module["ast"].get("imports", []):
            words = text[imp["span"]["start"] : imp["span"]["end"]].replace(".", " ").split()
            if words:
                yield words[-1]


def _span(node: Any) -> Any:
    return node["span"] if "span" in node else next(iter(node.values()))["span"]


def _text(text: str, node: Any) -> str:
    span = _span(node)
    return text[span["start"] : span["end"]]


def _head_end(head: Any, spec: Any) -> int | None:
    """Where a head ends: at its first body's ``if`` (None for a rule without a body).

    regorus' spans of strings (and of brackets around them) stop short of the
    closing quote, so head parts are cut from the text up to the next known
    position, never from their own span's end.
    """
    return int(spec["bodies"][0]["span"]["start"]) if spec["bodies"] else None


def _assigned_text(text: str, assign: Any, end: int | None) -> str:
    """The value of ``:= value`` / ``= value``, cut from the source up to the body."""
    if end is None:  # no body to stop at: a value without a body is not copied
        return _NOT_CONSTANT
    written = text[_span(assign)["start"] : end].strip()
    for op in (":=", "="):
        if written.startswith(op):
            return "(" + written.removeprefix(op).strip() + ")"
    raise VmUnguardable(f"cannot read the value of {written!r}")
