"""Release operations: the last step before data leaves, applied per field.

The policy decision's ``obligations`` say, for each field the agreement lets
out, which operation to apply (docs/conventions.md): ``pass``, ``drop``,
``mask``, ``generalise``, ``pseudonymise``, ``verify_only`` and
``aggregate``. Everything here is default-deny: a field without an obligation
is dropped, an unknown operation or malformed parameter refuses the whole
release, ``verify_only`` values never leave (only a predicate's yes/no does),
and aggregates suppress every cell smaller than k. Pseudonyms are
HMAC-SHA-256 under a key derived with HKDF from the gateway's root secret for
one (agreement, consumer) pair, so two consumers cannot join their records.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import AccordError

__all__ = [
    "OPERATIONS",
    "Operation",
    "ReleaseContext",
    "ReleaseError",
    "apply_release",
    "evaluate_predicate",
    "generalise_value",
    "normalise_obligations",
    "parse_predicate",
    "pseudonym",
    "release_record",
    "to_number",
]

OPERATIONS = ("pass", "drop", "mask", "generalise", "pseudonymise", "verify_only", "aggregate")
_EMITTING = frozenset({"pass", "mask", "generalise", "pseudonymise"})
_PARAMS = {
    "pass": set(),
    "drop": set(),
    "pseudonymise": set(),
    "aggregate": {"min_k"},
    "mask": {"keep_prefix", "keep_suffix"},
    "generalise": {"to", "width"},
    "verify_only": {"predicates"},
}


class ReleaseError(AccordError):
    """The obligations cannot be applied as written; nothing is released."""

    status = 422
    default_code = "release_refused"
    title = "Release refused"


@dataclass(frozen=True, slots=True)
class ReleaseContext:
    """Who receives the data and when; ``today`` is an argument (ages depend on it)."""

    agreement_id: str
    consumer: str
    root_secret: bytes = field(repr=False)
    today: dt.date
    birth_date_field: str = "birth_date"

    def __post_init__(self) -> None:
        if len(self.root_secret) < 32:
            raise ReleaseError(
                "pseudonym root secret must be at least 32 bytes", code="release_misconfigured"
            )


@dataclass(frozen=True, slots=True)
class Operation:
    """One validated obligation: the operation name and its parameters."""

    name: str
    params: Mapping[str, Any]


def _parse_op(fieldname: str, raw: Any, birth_date_field: str = "birth_date") -> Operation:
    spec: Mapping[str, Any] = {"operation": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, Mapping) or spec.get("operation") not in OPERATIONS:
        raise ReleaseError(
            f"field {fieldname!r}: unknown release operation", code="release_invalid_obligation"
        )
    name = str(spec["operation"])
    params = {k: v for k, v in spec.items() if k != "operation"}
    extra = set(params) - _PARAMS[name]
    if extra:
        raise ReleaseError(
            f"field {fieldname!r}: {name} does not take {sorted(extra)}",
            code="release_invalid_obligation",
        )
    for key in ("keep_prefix", "keep_suffix", "width", "min_k"):
        if key in params and (
            not isinstance(params[key], int)
            or isinstance(params[key], bool)
            or params[key] < (1 if key in ("width", "min_k") else 0)
        ):
            raise ReleaseError(
                f"field {fieldname!r}: {key} must be a non-negative integer",
                code="release_invalid_obligation",
            )
    if name == "generalise":
        to = params.get("to")
        if to not in ("year", "month", "band", "district") or (to == "band") != ("width" in params):
            raise ReleaseError(
                f"field {fieldname!r}: generalise needs to=year|month|district "
                "or to=band with width",
                code="release_invalid_obligation",
            )
    if name == "verify_only" and "predicates" in params:
        listed = params["predicates"]
        if not isinstance(listed, (list, tuple)):
            raise ReleaseError(
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
        raise ReleaseError("obligations must be a map", code="release_invalid_obligation")
    return {str(f): _parse_op(str(f), op, birth_date_field) for f, op in obligations.items()}


# --------------------------------------------------------------------------- operations


def _pseudonym_key(ctx: ReleaseContext) -> bytes:
    return _derive_pseudonym_key(ctx.root_secret, ctx.agreement_id, ctx.consumer)


@functools.lru_cache(maxsize=4096)
def _derive_pseudonym_key(root_secret: bytes, agreement_id: str, consumer: str) -> bytes:
    """HKDF once per (agreement, consumer), not once per exchange."""
    parts = (agreement_id.encode(), consumer.encode())
    info = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"accord/pseudonym/v1", info=info)
    return hkdf.derive(root_secret)


def pseudonym(value: Any, ctx: ReleaseContext, *, key: bytes | None = None) -> str:
    """Stable for one (agreement, consumer), unlinkable across consumers."""
    if isinstance(value, (dict, list)) or value is None:
        raise ReleaseError(
            "only scalar values can be pseudonymised", code="release_invalid_obligation"
        )
    digest = hmac.new(
        key or _pseudonym_key(ctx), str(value).encode("utf-8"), hashlib.sha256
    ).digest()
    return "ps1_" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _mask(value: Any, prefix: int, suffix: int) -> str:
    text = value if isinstance(value, str) else str(value)
    if prefix + suffix >= len(text):
        return "*" * len(text)
    return text[:prefix] + "*" * (len(text) - prefix - suffix) + text[len(text) - suffix :]


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        text = str(value)
        return (
            dt.datetime.fromisoformat(text).date() if "T" in text else dt.date.fromisoformat(text)
        )
    except ValueError:
        raise ReleaseError("value is not a date", code="release_type_mismatch") from None


def _age(born: dt.date, today: dt.date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def generalise_value(value: Any, params: Mapping[str, Any], ctx: ReleaseContext) -> str:
    to = params["to"]
    if to == "year":
        return f"{_as_date(value).year:04d}"
    if to == "month":
        d = _as_date(value)
        return f"{d.year:04d}-{d.month:02d}"
    if to == "band":
        width = int(params["width"])
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        elif isinstance(value, str) and value.strip().isdigit():
            n = int(value.strip())  # an age or count sent as text
        else:
            n = _age(_as_date(value), ctx.today)
        low = (n // width) * width
        return f"{low}-{low + width - 1}"
    return _district(value)


_NL_POSTCODE = re.compile(r"^([0-9]{4})\s*[A-Z]{2}$")
_UK_COMPACT = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")


def _district(value: Any) -> str:
    """The postcode's district part, the same with or without the inner space.

    ``1012 AB`` and ``1012AB`` → ``1012``; ``SW1A 1AA`` and ``SW1A1AA`` →
    ``SW1A``; other forms keep their first part, or their first three
    characters when they have no space (``75008`` → ``750``).
    """
    if not isinstance(value, str) or not value.strip():
        raise ReleaseError("value is not a postcode", code="release_type_mismatch")
    text = " ".join(value.strip().upper().split())
    m = _NL_POSTCODE.match(text) or _UK_COMPACT.match(text.replace(" ", ""))
    if m is not None:
        return m.group(1)
    return text.split(" ")[0] if " " in text else text[:3]


def _release_value(value: Any, op: Operation, ctx: ReleaseContext, key: bytes) -> Any:
    if op.name == "pass":
        return value
    if op.name == "mask":
        return _mask(
            value, int(op.params.get("keep_prefix", 0)), int(op.params.get("keep_suffix", 0))
        )
    if op.name == "generalise":
        return generalise_value(value, op.params, ctx)
    if isinstance(value, list):
        return [pseudonym(v, ctx, key=key) for v in value]
    return pseudonym(value, ctx, key=key)


def release_record(
    record: Mapping[str, Any], obligations: Mapping[str, Any], ctx: ReleaseContext
) -> dict[str, Any]:
    """One record with only the emitting obligations applied; all else dropped."""
    return apply_release([record], obligations, ctx)[0]


def apply_release(
    records: Iterable[Mapping[str, Any]], obligations: Mapping[str, Any], ctx: ReleaseContext
) -> list[dict[str, Any]]:
    """Release ``records`` under ``obligations`` ({field: op name | op object})."""
    ops = normalise_obligations(obligations)
    emitting = [(f, op) for f, op in ops.items() if op.name in _EMITTING]
    key = _pseudonym_key(ctx)
    out = []
    for record in records:
        released: dict[str, Any] = {}
        for fname, op in emitting:
            if fname in record and record[fname] is not None:
                released[fname] = _release_value(record[fname], op, ctx, key)
        out.append(released)
    return out


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


def evaluate_predicate(
    record: Mapping[str, Any], predicate: str, obligations: Mapping[str, Any], ctx: ReleaseContext
) -> bool:
    """Answer a verify-only question with True/False; the value itself never leaves."""
    parsed = parse_predicate(predicate, birth_date_field=ctx.birth_date_field)
    fn, fname, *args = parsed
    op = normalise_obligations(obligations, birth_date_field=ctx.birth_date_field).get(fname)
    if op is None or op.name not in ("verify_only", "pass"):
        raise ReleaseError(
            f"predicates on {fname!r} are not allowed by the agreement",
            code="predicate_not_allowed",
        )
    # verify_only answers only the questions the agreement lists: an open-ended
    # before()/age_over(n) would let a caller binary-search the exact value.
    allowed = op.params.get("predicates", ()) if op.name == "verify_only" else None
    if allowed is not None and parsed not in allowed:
        raise ReleaseError(
            "this predicate is not one the agreement lists", code="predicate_not_allowed"
        )
    value = record.get(fname)
    if fn == "exists":
        return value not in (None, "")
    if value is None:
        raise ReleaseError(
            f"{fname!r} is not on record; the predicate cannot be decided",
            code="predicate_undecidable",
        )
    if fn in ("age_over", "age_under"):
        age = _age(_as_date(value), ctx.today)
        return bool(age >= args[0]) if fn == "age_over" else bool(age < args[0])
    if fn == "equals":
        return _same(value, args[0])
    if fn == "not_equals":
        return not _same(value, args[0])
    if fn == "one_of":
        return any(_same(value, a) for a in args)
    if fn in ("before", "after"):
        d, ref = _as_date(value), _as_date(args[0])
        return d < ref if fn == "before" else d > ref
    number = to_number(value)
    return bool(number > args[0]) if fn == "greater_than" else bool(number < args[0])


def _same(value: Any, expected: Any) -> bool:
    if isinstance(value, str) and isinstance(expected, str):
        return value.casefold() == expected.casefold()
    return str(value) == str(expected)


def to_number(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ReleaseError("value is not a number", code="release_type_mismatch") from None
