"""Release obligations, read and validated before anything is released.

The policy decision's ``obligations`` map each field the agreement lets out to
one release operation and its parameters (docs/conventions.md).
``normalise_obligations`` checks all of them up front, so an unknown operation
or a malformed parameter refuses the whole release. ``verify_within_terms``
holds them to the signed agreement, whatever the policy wrote: the agreement
is the upper bound of what may leave, the policy may only restrict further.
Predicates (the ones a
``verify_only`` obligation lists, and the one a verify query asks) are parsed
here from a closed set of forms, never evaluated as code. ``gateway.release``
applies the operations and answers the predicates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.errors import AccordError

__all__ = [
    "OPERATIONS",
    "ExceedsAgreement",
    "Operation",
    "ReleaseError",
    "ReleaseMisconfigured",
    "normalise_obligations",
    "parse_predicate",
    "releases_no_more",
    "verify_within_terms",
]

OPERATIONS = ("pass", "drop", "mask", "generalise", "pseudonymise", "verify_only", "aggregate")
_PARAMS = {
    "pass": set(),
    "drop": set(),
    "pseudonymise": set(),
    "aggregate": {"min_k"},
    "mask": {"keep_prefix", "keep_suffix"},
    # min_k: a field an aggregate groups by its generalised value carries the k.
    "generalise": {"to", "width", "min_k"},
    "verify_only": {"predicates"},
}


class ReleaseError(AccordError):
    """The obligations cannot be applied as written; nothing is released."""

    status = 422
    default_code = "release_refused"
    title = "Release refused"


class ReleaseMisconfigured(ReleaseError):
    """What this gateway was told to apply cannot be applied (an obligation the policy
    wrote wrongly, a pseudonym secret too short): its operator's fault, not the
    caller's, so a server fault; nothing is released."""

    status = 500
    default_code = "release_invalid_obligation"
    title = "Release misconfigured"


class ExceedsAgreement(ReleaseMisconfigured):
    """The policy allowed more than the signed agreement does: a field it does not
    list, an operation weaker than its term, a purpose, consumer or dataset it does not
    name. Only a wrong policy version gets here (the shipped policy denies all of these),
    so it is a server fault, like any obligation the gateway cannot apply; nothing is
    released, whatever the policy said."""

    default_code = "obligation_exceeds_agreement"
    title = "The decision exceeds the agreement"


@dataclass(frozen=True, slots=True)
class Operation:
    """One validated obligation: the operation name and its parameters."""

    name: str
    params: Mapping[str, Any]


def _parse_op(fieldname: str, raw: Any, birth_date_field: str = "birth_date") -> Operation:
    spec: Mapping[str, Any] = {"operation": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, Mapping) or spec.get("operation") not in OPERATIONS:
        raise ReleaseMisconfigured(
            f"field {fieldname!r}: unknown release operation", code="release_invalid_obligation"
        )
    name = str(spec["operation"])
    params = {k: v for k, v in spec.items() if k != "operation"}
    extra = set(params) - _PARAMS[name]
    if extra:
        raise ReleaseMisconfigured(
            f"field {fieldname!r}: {name} does not take {sorted(extra)}",
            code="release_invalid_obligation",
        )
    for key in ("keep_prefix", "keep_suffix", "width", "min_k"):
        if key in params and (
            not isinstance(params[key], int)
            or isinstance(params[key], bool)
            or params[key] < (1 if key in ("width", "min_k") else 0)
        ):
            raise ReleaseMisconfigured(
                f"field {fieldname!r}: {key} must be a non-negative integer",
                code="release_invalid_obligation",
            )
    if name == "generalise":
        to = params.get("to")
        if to not in ("year", "month", "band", "district") or (to == "band") != ("width" in params):
            raise ReleaseMisconfigured(
                f"field {fieldname!r}: generalise needs to=year|month|district "
                "or to=band with width",
                code="release_invalid_obligation",
            )
    if name == "verify_only" and "predicates" in params:
        listed = params["predicates"]
        if not isinstance(listed, (list, tuple)):
            raise ReleaseMisconfigured(
                f"field {fieldname!r}: predicates must be a list",
                code="release_invalid_obligation",
            )
        params["predicates"] = tuple(
            parse_predicate(p, birth_date_field=birth_date_field) for p in listed
        )
    return Operation(name, params)


def normalise_obligations(
    obligations: Mapping[str, Any], *, birth_date_field: str = "birth_date"
) -> dict[str, Operation]:
    """Validate every obligation up front, so a bad one refuses the whole release."""
    if not isinstance(obligations, Mapping):
        raise ReleaseMisconfigured("obligations must be a map", code="release_invalid_obligation")
    return {str(f): _parse_op(str(f), op, birth_date_field) for f, op in obligations.items()}


# --------------------------------------------------------------------------- the agreement's bound


def releases_no_more(op: Operation, term: Operation) -> bool:
    """Whether ``op`` lets out no more of a field than the agreement's ``term`` does.

    A partial order on what leaves: ``pass`` lets out the value, so every operation
    is within it; ``drop`` lets out nothing, so it is within every term. Between
    them an operation is within only a term of its own kind, at parameters no wider:
    a ``mask`` keeping no more characters at either end, a ``generalise`` to the
    same or coarser units (a year for a month, a band a whole multiple of the
    term's width, which starts on the same boundaries), a ``verify_only`` answering
    only predicates the term lists. Across kinds nothing compares (a pseudonym is
    not a masked value, a masked value is not a yes/no), so nothing is within.
    """
    if op.name == "drop" or term.name == "pass":
        return True
    if op.name != term.name:
        return False
    if op.name == "mask":
        return all(
            int(op.params.get(end, 0)) <= int(term.params.get(end, 0))
            for end in ("keep_prefix", "keep_suffix")
        )
    if op.name == "generalise":
        to, term_to = op.params["to"], term.params["to"]
        if term_to == "band":
            return to == "band" and int(op.params["width"]) % int(term.params["width"]) == 0
        return to == term_to or (term_to, to) == ("month", "year")
    if op.name == "verify_only":
        return set(op.params.get("predicates", ())) <= set(term.params.get("predicates", ()))
    return True  # pseudonymise, aggregate: nothing widens them


def verify_within_terms(
    obligations: Mapping[str, Any],
    fields: Mapping[str, Any],
    *,
    min_k: int | None,
    birth_date_field: str = "birth_date",
) -> None:
    """Raise ``obligation_exceeds_agreement`` unless every obligation is within the
    agreement's term for its field (``fields``: the dataset's terms, field → release).

    The agreement is the upper bound whatever the policy wrote: a field it does not
    list may only be dropped, any other operation must be ``releases_no_more`` than
    its term, and a k an obligation carries may not be below the agreement's
    ``min_k``. A term the gateway cannot read bounds nothing, so it refuses too.
    """
    ops = normalise_obligations(obligations, birth_date_field=birth_date_field)
    for name, op in sorted(ops.items()):
        spec = fields.get(name)
        if spec is None:
            if op.name == "drop":
                continue
            raise ExceedsAgreement(
                f"the policy releases field {name!r}, which the agreement does not list"
            )
        try:
            term = _parse_op(name, spec, birth_date_field)
        except ReleaseError:
            raise ExceedsAgreement(
                f"the agreement's term for field {name!r} cannot be read"
            ) from None
        if not releases_no_more(op, term):
            raise ExceedsAgreement(
                f"the policy releases field {name!r} as {_spelt(op)}, "
                f"more than the agreement's {_spelt(term)}"
            )
        k = op.params.get("min_k")
        if min_k is not None and k is not None and k < min_k:
            raise ExceedsAgreement(
                f"the policy aggregates field {name!r} with k={k}, "
                f"below the agreement's min_k={min_k}"
            )


def _spelt(op: Operation) -> str:
    """An operation as the detail names it: the kind and the parameters that widen it."""
    shown = {
        k: v for k, v in op.params.items() if k in ("keep_prefix", "keep_suffix", "to", "width")
    }
    inner = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
    return f"{op.name}({inner})" if inner else op.name


# --------------------------------------------------------------------------- predicates

_TOKEN = re.compile(
    r'\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>"(?:[^"\\]|\\.)*")'
    r"|(?P<name>[a-z_][a-z0-9_]*))\s*"
)
_CALL = re.compile(r"^\s*(?P<fn>[a-z_]+)\s*\((?P<args>.*)\)\s*$", re.S)
_SIGNATURES = {
    "age_over": "n",
    "age_under": "n",
    "equals": "fv",
    "not_equals": "fv",
    "one_of": "fv+",
    "exists": "f",
    "greater_than": "fn",
    "less_than": "fn",
    "before": "fs",
    "after": "fs",
}


def parse_predicate(text: Any, *, birth_date_field: str = "birth_date") -> tuple[Any, ...]:
    """``age_over(18)`` → ``("age_over", "birth_date", 18)``; a closed set of forms.

    ``age_over(dob, 18)`` names the date field explicitly; without it the
    date field is ``birth_date_field``.
    """
    m = _CALL.match(text) if isinstance(text, str) and len(text) <= 500 else None
    if m is None or m["fn"] not in _SIGNATURES:
        raise ReleaseError("predicate is not one of the supported forms", code="predicate_invalid")
    args: list[Any] = []
    rest = m["args"]
    while rest.strip():
        tok = _TOKEN.match(rest)
        if tok is None:
            raise ReleaseError("predicate arguments do not parse", code="predicate_invalid")
        if tok["num"] is not None:
            args.append(Decimal(tok["num"]) if "." in tok["num"] else int(tok["num"]))
        elif tok["str"] is not None:
            args.append(re.sub(r"\\(.)", r"\1", tok["str"][1:-1], flags=re.S))
        else:
            args.append(("field", tok["name"]))
        rest = rest[tok.end() :]
        if rest.strip() and not rest.lstrip().startswith(","):
            raise ReleaseError("predicate arguments need commas", code="predicate_invalid")
        rest = rest.lstrip()[1:] if rest.strip() else ""
    fn = m["fn"]
    if fn in ("age_over", "age_under") and len(args) in (1, 2):
        if len(args) == 1:
            args.insert(0, ("field", birth_date_field))
        sig = "fn"
    else:
        sig = _SIGNATURES[fn]
    if not _fits(sig, args):
        raise ReleaseError(f"{fn}: wrong arguments", code="predicate_invalid")
    return (fn, args[0][1], *args[1:])


def _fits(sig: str, args: list[Any]) -> bool:
    if sig.endswith("+"):
        return (
            len(args) >= 2
            and _fits(sig[:-1], args[:2])
            and all(not isinstance(a, tuple) for a in args[2:])
        )
    if len(args) != len(sig):
        return False
    for kind, arg in zip(sig, args, strict=True):
        is_field = isinstance(arg, tuple)
        if (kind == "f") != is_field:
            return False
        if kind == "n" and not isinstance(arg, (int, Decimal)):
            return False
        if kind == "s" and not isinstance(arg, str):
            return False
    return True
