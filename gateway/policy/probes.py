"""Probe inputs: the fixed set on which regorus' VM is checked against its interpreter.

The probes are a fixed, seeded set derived from one realistic input (valid
against schemas/policy-input.schema.json) with mutations that reach every rule
of a policy written against that schema: each key removed, each value replaced
by a value of every JSON type, every classification level and caveat
combination, each query kind around the k threshold, usage around the quotas,
the clock around the agreement's validity window, every agreement status; plus
random pairs of those. A gateway with a decision log adds the most recent
distinct recorded inputs (``recorded_probes``), i.e. the inputs it actually sees.
The check itself (decide every probe on both, compare) is ``gateway.policy.vm_check``.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from gateway.policy.input import DEFAULT_LEVELS

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as DbEngine

__all__ = [
    "RECORDED_PROBES",
    "Probe",
    "base_probe_input",
    "recorded_probes",
    "synthetic_probes",
]

#: At most this many recorded decision inputs join the synthetic probes.
RECORDED_PROBES = 500
_SEED = 20261125
_RANDOM_PAIRS = 60
_ODD_VALUES: tuple[tuple[str, Any], ...] = (
    ("null", None),
    ('""', ""),
    ("0", 0),
    ("1.5", 1.5),
    ("true", True),
    ("[]", []),
    ("{}", {}),
    ("non-ASCII", "Grüße ✓ 名前"),
)
_NOW = 1780315200  # 2026-06-01T12:00:00Z
_NOT_BEFORE = 1767225600
_NOT_AFTER = 1798761599
_MIN_K = 10
# Wide requests: one the VM evaluates, one beyond its instruction limit (~200 fields
# with the shipped policy), which the interpreter decides.
_MANY_FIELDS = (40, 250)
_PER_MINUTE, _PER_DAY = 10, 1000
_CAVEATS: tuple[list[str], ...] = ([], ["uk-eyes"], ["uk-eyes", "fvey"])


@dataclass(frozen=True)
class Probe:
    """One input (as the JSON the engines read) and how it was made."""

    label: str
    payload: str


def base_probe_input() -> dict[str, Any]:
    """An allowed record request, valid against the policy input schema."""
    return {
        "schema_version": 1,
        "now": {"rfc3339": "2026-06-01T12:00:00Z", "unix": _NOW},
        "scheme": {"name": "uk-gsc", "levels": list(DEFAULT_LEVELS)},
        "caller": {
            "department": "dwp",
            "system": "benefits",
            "clearance": "confidential",
            "caveats": ["uk-eyes"],
        },
        "agreement": {
            "id": "agr-1",
            "version": 1,
            "status": "active",
            "provider": "hmrc",
            "consumer": "dwp",
            "not_before": _NOT_BEFORE,
            "not_after": _NOT_AFTER,
            "ceiling": "confidential",
            "purposes": ["benefit_eligibility"],
            "legal_basis": "",
            "datasets": {
                "person@1": {
                    "fields": {
                        "name": {"operation": "pass"},
                        "birth_date": {"operation": "generalise", "to": "year"},
                        "nino": {"operation": "mask", "keep_suffix": 2},
                        "health": {"operation": "pseudonymise"},
                        "income": {"operation": "verify_only"},
                    },
                    "aggregate": {"min_k": _MIN_K},
                }
            },
            "quotas": {"per_minute": _PER_MINUTE, "per_day": _PER_DAY},
        },
        "request": {
            "dataset": "person@1",
            "purpose": "benefit_eligibility",
            "fields": {
                "name": {"level": "internal", "caveats": [], "personal": "identifier"},
                "birth_date": {"level": "confidential", "personal": "quasi_identifier"},
                "nino": {"level": "confidential", "caveats": ["uk-eyes"]},
            },
            "query": {"kind": "record"},
        },
        "usage": {"minute": 0, "day": 5},
    }


# A mutation: (label, [(path, value or _REMOVE)]) applied to a copy of the base.
_REMOVE = object()
_Edit = tuple[tuple[str | int, ...], Any]
_Mutation = tuple[str, tuple[_Edit, ...]]


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every path below ``node``, parents before children."""
    items: Any = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        path = (*prefix, key)
        yield path
        if isinstance(child, dict | list) and child:
            yield from _paths(child, path)


def _name(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


def _single_mutations(base: dict[str, Any]) -> list[_Mutation]:
    out: list[_Mutation] = []
    paths = list(_paths(base))
    for path in paths:
        if isinstance(path[-1], str):
            out.append((f"remove {_name(path)}", ((path, _REMOVE),)))
    for path in paths:
        node = _get(base, path)
        # Every leaf takes every kind of odd value; a container takes the
        # scalars and the empty containers (its members are mutated one by one).
        odd = _ODD_VALUES if not node or not isinstance(node, dict | list) else _ODD_VALUES[:3]
        if node and isinstance(node, dict | list):
            odd += (("[]", []), ("{}", {}))
        for label, value in odd:
            out.append((f"{_name(path)} = {label}", ((path, value),)))
    levels = [*DEFAULT_LEVELS, "top-secret"]  # plus one the scheme does not know
    field = ("request", "fields", "birth_date")
    for level, clearance in itertools.product(levels, levels):
        out.append(
            (
                f"field level {level}, clearance {clearance}",
                (((*field, "level"), level), (("caller", "clearance"), clearance)),
            )
        )
    for level, ceiling in itertools.product(levels, levels):
        out.append(
            (
                f"field level {level}, ceiling {ceiling}",
                (((*field, "level"), level), (("agreement", "ceiling"), ceiling)),
            )
        )
    for wanted, held in itertools.product(_CAVEATS, _CAVEATS):
        out.append(
            (
                f"field caveats {wanted}, caller caveats {held}",
                (((*field, "caveats"), wanted), (("caller", "caveats"), held)),
            )
        )
    for personal, basis in itertools.product(
        ["identifier", "quasi_identifier", "sensitive", "special"], ["", "GDPR 6(1)(e)"]
    ):
        out.append(
            (
                f"personal {personal}, legal basis {basis!r}",
                (((*field, "personal"), personal), (("agreement", "legal_basis"), basis)),
            )
        )
    query = ("request", "query")
    for kind in ("record", "verify", "aggregate"):
        out.append((f"query {kind} without cohort", ((query, {"kind": kind}),)))
        for size in (0, _MIN_K - 1, _MIN_K, _MIN_K + 1, 9.5, "10", None):
            edit = (query, {"kind": kind, "cohort_size": size})
            out.append((f"query {kind}, cohort {size}", (edit,)))
    no_aggregate = (("agreement", "datasets", "person@1", "aggregate"), _REMOVE)
    big_cohort = (query, {"kind": "aggregate", "cohort_size": 50})
    out.append(("aggregate query, agreement allows none", (no_aggregate, big_cohort)))
    only_in_aggregates = (("agreement", "datasets", "person@1", "fields", "name"), "aggregate")
    for kind in ("record", "verify", "aggregate"):
        edit = (query, {"kind": kind, "cohort_size": 50})
        out.append((f"aggregate-only field, {kind} query", (only_in_aggregates, edit)))
    # An aggregate naming what it groups by and sums: each field judged by its operation.
    for op_field in ("name", "birth_date", "nino"):
        specs: tuple[tuple[str, dict[str, Any]], ...] = (
            ("group_by", {"group_by": [op_field], "sums": []}),
            ("sums", {"group_by": ["name"], "sums": [op_field]}),
        )
        for role, spec in specs:
            edit = (query, {"kind": "aggregate", **spec, "cohort_size": 50})
            out.append((f"aggregate, {role} {op_field}", (edit,)))
    odd_specs: tuple[tuple[str, Any], ...] = (
        ("a string", "name"),
        ("an unrequested field", ["income"]),
    )
    for label, group_by in odd_specs:
        edit = (query, {"kind": "aggregate", "group_by": group_by, "cohort_size": 50})
        out.append((f"aggregate, group_by {label}", (edit,)))
    income_requested = (("request", "fields", "income"), {"level": "internal"})
    for kind in ("record", "verify", "aggregate"):
        edit = (query, {"kind": kind, "cohort_size": 50})
        out.append((f"verify-only field, {kind} query", (income_requested, edit)))
    for minute, day in itertools.product(
        (_PER_MINUTE - 1, _PER_MINUTE, _PER_MINUTE + 1),
        (_PER_DAY - 1, _PER_DAY, _PER_DAY + 1),
    ):
        edits = ((("usage", "minute"), minute), (("usage", "day"), day))
        out.append((f"usage minute {minute}, day {day}", edits))
    for name, bound in (("not_before", _NOT_BEFORE), ("not_after", _NOT_AFTER)):
        for delta in (-1, 0, 1):
            out.append((f"now = {name} {delta:+d}", ((("now", "unix"), bound + delta),)))
    out.append(("no agreement", ((("agreement",), None),)))
    for status in ("draft", "active", "suspended", "revoked", "expired", "unknown"):
        out.append((f"agreement {status}", ((("agreement", "status"), status),)))
    out.append(("other consumer", ((("caller", "department"), "hmrc"),)))
    out.append(("dataset not covered", ((("request", "dataset"), "vehicle@1"),)))
    out.append(("purpose not permitted", ((("request", "purpose"), "marketing"),)))
    out.append(
        (
            "field not permitted",
            (((*field[:-1], "address"), {"level": "internal"}),),
        )
    )
    income = ("agreement", "datasets", "person@1", "fields", "income")
    out.append(("operation spelled as a bare string", ((income, "verify_only"),)))
    out.append(("non-ASCII field name", (((*field[:-1], "名前"), {"level": "public"}),)))
    for width in _MANY_FIELDS:
        many = {f"extra_{i}": {"level": "public"} for i in range(width)}
        permitted = {name: {"operation": "pass"} for name in many}
        fields = base["agreement"]["datasets"]["person@1"]["fields"]
        out.append(
            (
                f"{width} more fields requested and permitted",
                (
                    (field[:-1], {**base["request"]["fields"], **many}),
                    (income[:-1], {**fields, **permitted}),
                ),
            )
        )
    out.append(("empty input", (((), {}),)))
    return out


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _apply(base: dict[str, Any], edits: Sequence[_Edit]) -> Any:
    """A copy of ``base`` with ``edits`` made; an edit below a replaced value is skipped."""
    doc: Any = copy.deepcopy(base)
    for path, value in edits:
        if not path:
            doc = copy.deepcopy(value)
            continue
        try:
            parent = _get(doc, path[:-1])
        except (KeyError, IndexError, TypeError):
            continue
        key = path[-1]
        if value is _REMOVE:
            if isinstance(parent, dict):
                parent.pop(key, None)
        elif isinstance(parent, dict):  # noqa: SIM114 - mypy narrows the key per branch
            parent[key] = copy.deepcopy(value)
        elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
            parent[key] = copy.deepcopy(value)
    return doc


def _encode(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False)


@cache
def synthetic_probes() -> tuple[Probe, ...]:
    """The fixed probe set: the base, every single mutation, then seeded random pairs."""
    base = base_probe_input()
    singles = _single_mutations(base)
    rng = random.Random(_SEED)
    pairs = [rng.sample(singles, 2) for _ in range(_RANDOM_PAIRS)]
    made: list[_Mutation] = [("base input", ()), *singles]
    made += [(f"{a}; {b}", (*ea, *eb)) for (a, ea), (b, eb) in pairs]
    probes: list[Probe] = []
    seen: set[str] = set()
    for label, edits in made:
        payload = _encode(_apply(base, edits))
        if payload not in seen:  # e.g. usage.minute = 0 is the base again
            seen.add(payload)
            probes.append(Probe(label, payload))
    return tuple(probes)


def recorded_probes(db: DbEngine, *, limit: int = RECORDED_PROBES) -> list[Probe]:
    """The most recent distinct decision inputs of the decision log (newest first)."""
    # Imported here: evaluator processes use the probes without the database layer.
    from sqlmodel import Session, col, select

    from gateway.policy.models import PolicyDecisionRecord

    with Session(db) as s:
        rows = s.exec(
            select(PolicyDecisionRecord.exchange_id, PolicyDecisionRecord.input)
            .order_by(col(PolicyDecisionRecord.id).desc())
            .limit(limit * 2)
        ).all()
    seen: set[str] = set()
    out: list[Probe] = []
    for exchange_id, doc in rows:
        payload = _encode(doc)
        if payload in seen:
            continue
        seen.add(payload)
        out.append(Probe(f"recorded input of exchange {exchange_id}", payload))
        if len(out) >= limit:
            break
    return out
