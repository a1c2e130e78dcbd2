"""Hypothesis strategies for policy inputs.

``schema_inputs`` draws documents straight from schemas/policy-input.schema.json
(a small generator for the keywords that schema uses); they are valid but mostly
nonsense, which exercises
the unknown-name paths. ``near_valid_inputs`` draws from small vocabularies
around the corpus base so that every rule fires often, then may swap one value
for an arbitrary JSON value to hit the wrong-type paths.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

from gateway.policy.input import INPUT_SCHEMA_PATH
from tests.policies.harness import base_input

LEVELS = ["public", "internal", "confidential", "restricted"]
NAMES = ["name", "birth_date", "nino", "health", "income", "address", "姓名", ""]
OPS = [
    {"operation": "pass"},
    {"operation": "drop"},
    {"operation": "mask", "keep_prefix": 1},
    {"operation": "generalise", "to": "year"},
    {"operation": "pseudonymise"},
    {"operation": "verify_only"},
    "pass",
]
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=6),
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
NOW = 1780315200
NOT_BEFORE = 1767225600
NOT_AFTER = 1798761599


def schema_inputs() -> st.SearchStrategy[Any]:
    """Documents valid against the input schema, generated from the schema itself."""
    schema = json.loads(INPUT_SCHEMA_PATH.read_text(encoding="utf-8"))
    return _from_schema(schema, schema["$defs"])


def _from_schema(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for the JSON Schema keywords our input schema uses (and no others)."""
    if "$ref" in node:
        return st.deferred(lambda: _from_schema(defs[node["$ref"].removeprefix("#/$defs/")], defs))
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "oneOf" in node:
        return st.one_of([_from_schema(n, defs) for n in node["oneOf"]])
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "string":
        if node.get("format") == "date-time":
            return st.just("2026-06-01T12:00:00Z")
        return st.text(min_size=node.get("minLength", 0), max_size=8)
    if kind == "integer":
        return st.integers(min_value=node.get("minimum", -(2**40)), max_value=2**40)
    if kind == "array":
        items = _from_schema(node.get("items", {"type": "string"}), defs)
        return st.lists(
            items,
            min_size=node.get("minItems", 0),
            max_size=4,
            unique=node.get("uniqueItems", False),
        )
    if kind == "object":
        props = node.get("properties", {})
        required = set(node.get("required", []))
        fixed = {k: _from_schema(v, defs) for k, v in props.items() if k in required}
        optional = {k: _from_schema(v, defs) for k, v in props.items() if k not in required}
        base = st.fixed_dictionaries(fixed, optional=optional)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            more = st.dictionaries(
                st.text(max_size=6),
                _from_schema(extra, defs),
                min_size=node.get("minProperties", 0),
                max_size=3,
            )
            return st.tuples(more, base).map(lambda pair: {**pair[0], **pair[1]})
        return base
    raise ValueError(f"schema keyword set not supported by the generator: {node}")


def _label() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {},
            optional={
                "level": st.sampled_from([*LEVELS, "secret", ""]),
                "caveats": st.lists(st.sampled_from(["uk-eyes", "hmrc-only", "Ω"]), max_size=2),
                "personal": st.sampled_from(
                    ["identifier", "quasi_identifier", "sensitive", "special"]
                ),
            },
        ),
    )


@st.composite
def near_valid_inputs(draw: st.DrawFn) -> Any:
    doc = base_input()
    agreement = doc["agreement"]
    agreement["status"] = draw(st.sampled_from(["active", "active", "suspended", "revoked"]))
    agreement["ceiling"] = draw(st.sampled_from(LEVELS))
    agreement["legal_basis"] = draw(st.sampled_from(["", "Art. 9(2)(b)"]))
    agreement["datasets"]["person@1"]["fields"] = draw(
        st.dictionaries(st.sampled_from(NAMES), st.sampled_from(OPS), max_size=5)
    )
    if draw(st.booleans()):
        del agreement["datasets"]["person@1"]["aggregate"]
    agreement["quotas"] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "per_minute": st.sampled_from([0, 1, 10, 10.0]),
                "per_day": st.sampled_from([5, 1000]),
            },
        )
    )
    doc["caller"]["department"] = draw(st.sampled_from(["dwp", "hmrc", "", "dwр"]))
    doc["caller"]["clearance"] = draw(st.sampled_from([*LEVELS, "cosmic"]))
    doc["caller"]["caveats"] = draw(st.lists(st.sampled_from(["uk-eyes", "hmrc-only"]), max_size=2))
    doc["request"]["dataset"] = draw(st.sampled_from(["person@1", "person@1", "vehicle@1"]))
    doc["request"]["purpose"] = draw(st.sampled_from(["benefit_eligibility", "marketing"]))
    doc["request"]["fields"] = draw(st.dictionaries(st.sampled_from(NAMES), _label(), max_size=4))
    doc["request"]["query"] = draw(
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["record", "verify", "aggregate"])},
            optional={"cohort_size": st.sampled_from([0, 9, 10, 9.5, 10.0, 1000])},
        )
    )
    doc["now"]["unix"] = draw(
        st.sampled_from(
            [NOW, NOT_BEFORE, NOT_BEFORE - 1, NOT_AFTER, NOT_AFTER + 1, NOT_AFTER + 0.5]
        )
    )
    doc["usage"] = {
        "minute": draw(st.sampled_from([0, 9, 10, 9.0, 10.0, 11])),
        "day": draw(st.sampled_from([0, 999, 1000])),
    }
    if draw(st.integers(0, 3)) == 0:
        doc = _mutate(draw, doc)
    return doc


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _mutate(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """Replace or delete one value anywhere in the document."""
    doc = copy.deepcopy(doc)
    path = draw(st.sampled_from(_paths(doc)))
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_ANY)
    return doc
