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
The obligations are read and validated by ``gateway.release_obligations``.
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

from gateway.release_obligations import (
    Operation,
    ReleaseError,
    ReleaseMisconfigured,
    normalise_obligations,
    parse_predicate,
)

__all__ = [
    "ReleaseContext",
    "apply_release",
    "evaluate_predicate",
    "generalise_value",
    "pseudonym",
    "release_record",
    "to_number",
    "verify_predicate_allowed",
]

_EMITTING = frozenset({"pass", "mask", "generalise", "pseudonymise"})


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
            raise ReleaseMisconfigured(
                "pseudonym root secret must be at least 32 bytes", code="release_misconfigured"
            )


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
        raise ReleaseMisconfigured("only scalar values can be pseudonymised")
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
        return _band(value, int(params["width"]), ctx)
    return _district(value)


_NUMBER = re.compile(r"^-?[0-9]{1,64}(?:\.([0-9]{1,64}))?$")


def _band(value: Any, width: int, ctx: ReleaseContext) -> str:
    """The band of ``width`` holding a number, or the age on ``ctx.today`` for a date.

    Bands are closed, written low-high in the value's own precision: ``10-19`` for
    an integer (an age, a count, all-digit text); for a decimal string with k places
    the top is the last k-place value below the next band, so ``"123.45"`` with
    width 100 is ``100-199.99`` (canonical money always has two places, so one
    field's bands read alike and group together). Exact: integers, never floats."""
    m = _NUMBER.match(value.strip()) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif m is not None and m.group(1) is None:
        n = int(m.group(0))  # an age or count sent as text
    elif m is not None:
        unit = 10 ** len(m.group(1))  # the value in units of its last place
        low = (int(m.group(0).replace(".", "")) // (width * unit)) * width
        q, r = divmod(abs(low * unit + width * unit - 1), unit)
        top = f"{'-' if low + width <= 0 else ''}{q}.{r:0{len(m.group(1))}d}"
        return f"{low}-{top}"
    else:
        n = _age(_as_date(value), ctx.today)
    low = (n // width) * width
    return f"{low}-{low + width - 1}"


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


def verify_predicate_allowed(
    predicate: str, obligations: Mapping[str, Any], *, birth_date_field: str = "birth_date"
) -> None:
    """Raise ``predicate_not_allowed`` unless the obligations open this question.

    Needs no record, so the exchange asks it before the provider is: a question the
    agreement does not allow never reaches the provider's system."""
    parsed = parse_predicate(predicate, birth_date_field=birth_date_field)
    fname = parsed[1]
    op = normalise_obligations(obligations, birth_date_field=birth_date_field).get(fname)
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


def evaluate_predicate(
    record: Mapping[str, Any], predicate: str, obligations: Mapping[str, Any], ctx: ReleaseContext
) -> bool:
    """Answer a verify-only question with True/False; the value itself never leaves."""
    verify_predicate_allowed(predicate, obligations, birth_date_field=ctx.birth_date_field)
    fn, fname, *args = parse_predicate(predicate, birth_date_field=ctx.birth_date_field)
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
