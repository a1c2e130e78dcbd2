"""Hypothesis: a compiled mapping never emits a field that is not in its spec.

Specs are drawn from the whole closed vocabulary (paths, const, concat, each,
steps, defaults, conditions) and records from arbitrary JSON-like values that
share some names with the spec's sources, so both the happy and the failing
paths are exercised. Whatever happens, the output holds only spec targets (at
every nesting level) and the input record is left untouched.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.interface import MappingError
from connectors.mapping import compile_mapping

NAMES = st.sampled_from(["a", "b", "c", "n", "x", "list", "Code", "v1", "secret"])
TARGETS = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(".".join)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(max_size=12),
    st.sampled_from(["2024-02-29", "29/02/2024", "F", "1.234,50", "A;B;C"]),
)  # fmt: skip
SIMPLE_STEPS = st.sampled_from(["upper", "lower", "strip", "int", "decimal", "string"])
STEPS = st.one_of(
    SIMPLE_STEPS,
    st.sampled_from(
        [
            {"date": "%Y-%m-%d"},
            {"date": "%d/%m/%Y"},
            {"format_date": "%d-%m-%Y"},
            {"datetime": {"format": "%Y-%m-%d", "naive_as_utc": True}},
            {"lookup": {"F": "female", "M": "male"}},
            {"lookup": "codes"},
            {"decimal": {"places": 2, "decimal_separator": ",", "group_separator": "."}},
            {"split": {"separator": ";", "index": 1}},
        ]
    ),
)
CONDITIONS = st.one_of(
    st.builds(lambda f, v: {"field": f, "equals": v}, PATHS, SCALARS),
    st.builds(lambda f, v: {"field": f, "present": v}, PATHS, st.booleans()),
    st.builds(lambda f, v: {"field": f, "in": v}, PATHS, st.lists(SCALARS, max_size=3)),
)


def _rule(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    base = st.one_of(
        st.builds(lambda p: {"from": p}, PATHS),
        st.builds(lambda v: {"const": v}, SCALARS),
        st.builds(
            lambda parts, sep: {"concat": {"parts": parts, "separator": sep}},
            st.lists(
                st.one_of(
                    st.builds(lambda p: {"from": p}, PATHS),
                    st.builds(lambda c: {"const": c}, st.text(max_size=4)),
                ),
                min_size=1,
                max_size=3,
            ),
            st.sampled_from(["", " ", ", "]),
        ),
    )
    if depth < 2:
        base = st.one_of(
            base,
            st.builds(lambda p, f: {"each": {"from": p, "fields": f}}, PATHS, _fields(depth + 1)),
        )

    def decorate(rule: dict[str, Any], steps: list[Any], default: Any, when: Any) -> Any:
        rule = dict(rule)
        if steps and ("from" in rule or "concat" in rule):
            rule["steps"] = steps
        if default is not None:
            rule["default"] = default
        if when is not None:
            rule["when"] = when
        return rule

    return st.builds(
        decorate,
        base,
        st.lists(STEPS, max_size=3),
        st.one_of(st.none(), SCALARS),
        st.one_of(st.none(), CONDITIONS),
    )


def _fields(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    targets = st.one_of(TARGETS, st.builds(lambda a, b: f"{a}.{b}", TARGETS, TARGETS))
    return st.dictionaries(targets, _rule(depth), min_size=1, max_size=5)


JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=12,
)
RECORDS = st.dictionaries(NAMES, JSON, max_size=8)


def _allowed_shape(fields: dict[str, Any]) -> dict[str, Any]:
    """Target name → nested allowed shape (None for a leaf, dict for an object or each)."""
    shape: dict[str, Any] = {}
    for target, rule in fields.items():
        parts = target.split(".")
        node = shape
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        leaf = _allowed_shape(rule["each"]["fields"]) if "each" in rule else None
        node[parts[-1]] = node.get(parts[-1], leaf)
    return shape


def _within(value: Any, shape: Any) -> bool:
    if shape is None:
        return True
    if isinstance(value, list):
        return all(_within(v, shape) for v in value)
    if not isinstance(value, dict):
        return True
    return all(k in shape and _within(v, shape[k]) for k, v in value.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=_fields(0), record=RECORDS)
def test_mapping_never_emits_a_field_not_in_the_spec(
    fields: dict[str, Any], record: dict[str, Any]
) -> None:
    doc = {
        "spec": "accord-mapping/1",
        "source": {"system": "dept", "entity": "thing"},
        "target": {"model": "person@1"},
        "codelists": {"codes": {"1": "one", "F": "female"}},
        "fields": fields,
    }
    try:
        mapping = compile_mapping(doc, {"type": "object"})
    except MappingError as exc:
        # The only spec this vocabulary can get wrong: "a" and "a.b" both as targets.
        clash = exc.detail
    else:
        clash = None
    if clash is not None:
        assert "target clashes with" in clash
        return
    before = copy.deepcopy(record)
    out: dict[str, Any] | None
    try:
        out = mapping.map_unvalidated(record)
    except MappingError as exc:
        out, code = None, exc.code
    assert record == before  # mapping never alters its input, even when it fails
    if out is None:
        assert code == "mapping_error"
        return
    assert set(out) <= {t.split(".")[0] for t in fields}
    assert _within(out, _allowed_shape(fields))
    assert mapping.map_unvalidated(record) == out  # deterministic
