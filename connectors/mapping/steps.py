"""The closed vocabulary of value transforms a mapping step may name.

Each step compiles once into a plain function ``value -> value`` that raises
``StepFailed`` when the value does not fit (a bad date, an unknown code). The
list is fixed on purpose: an officer reviewing a mapping must be able to read
every possible effect, so there is no expression language, no jq and no
callback into user code.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

__all__ = ["Step", "StepFailed", "StepSpecInvalid", "compile_step"]

Step = Callable[[Any], Any]

# Fixed-width digits for each strptime directive a format may use; anything else
# (locale names, %I/%p, a bad directive such as %Q) is refused when compiling.
_DIRECTIVES = {
    "Y": "[0-9]{4}", "m": "[0-9]{2}", "d": "[0-9]{2}", "y": "[0-9]{2}", "j": "[0-9]{3}",
    "H": "[0-9]{2}", "M": "[0-9]{2}", "S": "[0-9]{2}", "f": "[0-9]{1,6}",
    "z": "(?:Z|[+-][0-9]{2}:?[0-9]{2})", "%": "%",
}  # fmt: skip
# Directives ``format_date`` may write from a date (C89/ISO ones Python has everywhere).
_OUTPUT_DIRECTIVES = frozenset("YmdyjbBaAuwUWGV%")
_INT = re.compile(r"[+-]?[0-9]+")
_SPACE = " \t\r\n"
_MAX_DIGITS = 40  # far beyond any amount; keeps every decimal operation below exact
_EXACT = Context(prec=2 * _MAX_DIGITS, traps=[InvalidOperation, Inexact])


class StepFailed(Exception):
    """A value did not fit a step; the message names the step, never the value."""


class StepSpecInvalid(Exception):
    """A step's parameters can never work (a bad date directive, clashing separators)."""


def _text(value: Any, step: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)
    raise StepFailed(f"{step} needs text")


def _upper(value: Any) -> Any:
    return _text(value, "upper").upper()


def _lower(value: Any) -> Any:
    return _text(value, "lower").lower()


def _strip(value: Any) -> Any:
    return _text(value, "strip").strip()


def _string(value: Any) -> Any:
    return _text(value, "string")


def _int(value: Any) -> Any:
    if isinstance(value, bool):
        raise StepFailed("int does not take booleans")
    if isinstance(value, int):
        return value
    text = _text(value, "int").strip(_SPACE)
    # Python's int() also takes "1_0" and non-ASCII digits ("٣"): only [+-]digits here.
    if not _INT.fullmatch(text):
        raise StepFailed("int: not an integer")
    try:
        return int(text)
    except ValueError:  # more digits than Python converts
        raise StepFailed("int: not an integer") from None


def _number_pattern(decimal_separator: str, group_separator: str) -> re.Pattern[str]:
    """Sign, whole digits (grouped in threes after the first group, or not at all),
    then optionally the decimal separator and at least one digit; ASCII digits only."""
    whole = "[0-9]+"
    if group_separator:
        g = re.escape(group_separator)
        whole = f"(?:[0-9]{{1,3}}(?:{g}[0-9]{{3}})+|[0-9]+)"
    return re.compile(f"[+-]?{whole}(?:{re.escape(decimal_separator)}[0-9]+)?")


def _decimal(
    places: int | None = None,
    shift: int = 0,
    decimal_separator: str = ".",
    group_separator: str = "",
) -> Step:
    if group_separator == decimal_separator:
        raise StepSpecInvalid("decimal: the group and decimal separators are the same")
    pattern = _number_pattern(decimal_separator, group_separator)
    quantum = Decimal(1).scaleb(-places) if places is not None else None

    def step(value: Any) -> Any:
        if isinstance(value, bool):
            raise StepFailed("decimal does not take booleans")
        if isinstance(value, (int, Decimal)):
            number = Decimal(value)  # separators describe text; a number is read as it is
        elif isinstance(value, float):
            number = Decimal(repr(value))  # the shortest text that reads back as this float
        else:
            text = _text(value, "decimal").strip(_SPACE)
            if not pattern.fullmatch(text):
                raise StepFailed("decimal: not a number in the expected format")
            if group_separator:
                text = text.replace(group_separator, "")
            number = Decimal(text.replace(decimal_separator, "."))
        if not number.is_finite():
            raise StepFailed("decimal: not a finite number")
        if len(number.as_tuple().digits) > _MAX_DIGITS:
            raise StepFailed("decimal: too many digits")
        try:
            if shift:
                number = number.scaleb(shift, _EXACT)
            if quantum is not None:
                number = number.quantize(quantum, context=_EXACT)
        except Inexact:
            # 1.5 cents is not 0.02: an amount is never rounded into another one
            raise StepFailed(f"decimal: more than {places} decimal places") from None
        except InvalidOperation:
            raise StepFailed("decimal: out of range") from None
        return format(number, "f")

    return step


def _shape(fmt: str, step: str, allowed: Mapping[str, str]) -> re.Pattern[str]:
    """The exact text a format describes: each directive its fixed digits, the rest literal."""
    out: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] != "%":
            out.append(re.escape(fmt[i]))
            i += 1
            continue
        directive = fmt[i + 1 : i + 2]
        if directive not in allowed:
            raise StepSpecInvalid(
                f"{step}: %{directive} is not a directive this step reads (use "
                + " ".join("%" + d for d in allowed)
                + ")"
            )
        out.append(allowed[directive])
        i += 2
    return re.compile("".join(out))


def _strict_parse(text: str, fmt: str, shape: re.Pattern[str], step: str) -> dt.datetime:
    # strptime alone reads "2024111" as 2024-11-01 under %Y%m%d: the shape comes first.
    if not shape.fullmatch(text):
        raise StepFailed(f"{step}: does not match {fmt!r}")
    try:
        return dt.datetime.strptime(text, fmt)
    except ValueError:
        raise StepFailed(f"{step}: does not match {fmt!r}") from None


def _date(fmt: str) -> Step:
    shape = _shape(fmt, "date", _DIRECTIVES)

    def step(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        return _strict_parse(_text(value, "date"), fmt, shape, "date").date().isoformat()

    return step


def _format_date(fmt: str) -> Step:
    """ISO date in, the consumer's own date format out (canonical → consumer)."""
    for directive in re.findall("%(.?)", fmt.replace("%%", "")):
        if directive not in _OUTPUT_DIRECTIVES:
            raise StepSpecInvalid(f"format_date: %{directive} is not a date directive")

    def step(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.strftime(fmt)
        if isinstance(value, dt.date):
            return value.strftime(fmt)
        try:
            return dt.date.fromisoformat(_text(value, "format_date")).strftime(fmt)
        except ValueError:
            raise StepFailed("format_date: not an ISO date") from None

    return step


def _datetime(fmt: str, naive_as_utc: bool = False) -> Step:
    shape = _shape(fmt, "datetime", _DIRECTIVES)

    def step(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            parsed = value
        else:
            parsed = _strict_parse(_text(value, "datetime"), fmt, shape, "datetime")
        if parsed.tzinfo is None:
            if not naive_as_utc:
                raise StepFailed("datetime: no time zone and naive_as_utc is not set")
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.isoformat()

    return step


def _lookup(table: Mapping[str, Any], name: str) -> Step:
    frozen = {str(k): v for k, v in table.items()}

    def step(value: Any) -> Any:
        if isinstance(value, bool):
            raise StepFailed(f"lookup {name}: booleans are not codes")
        try:
            return frozen[value if isinstance(value, str) else str(value)]
        except KeyError:
            raise StepFailed(f"lookup {name}: unknown code") from None

    return step


def _split(separator: str, index: int) -> Step:
    def step(value: Any) -> Any:
        parts = _text(value, "split").split(separator)
        try:
            return parts[index].strip()
        except IndexError:
            raise StepFailed(f"split: no part {index}") from None

    return step


_SIMPLE: dict[str, Step] = {
    "upper": _upper,
    "lower": _lower,
    "strip": _strip,
    "int": _int,
    "string": _string,
    "decimal": _decimal(),
}


def compile_step(step: Any, codelists: Mapping[str, Mapping[str, Any]]) -> Step:
    """One validated step description → its function (spec validation ran first).

    Parameters that can never work raise ``StepSpecInvalid`` here, not on a record.
    """
    if isinstance(step, str):
        return _SIMPLE[step]
    ((name, arg),) = step.items()
    if name == "date":
        return _date(arg)
    if name == "format_date":
        return _format_date(arg)
    if name == "datetime":
        if isinstance(arg, str):
            return _datetime(arg)
        return _datetime(arg["format"], bool(arg.get("naive_as_utc", False)))
    if name == "lookup":
        if isinstance(arg, str):
            if arg not in codelists:
                raise StepSpecInvalid(f"unknown code list {arg!r}")
            return _lookup(codelists[arg], arg)
        return _lookup(arg, "inline")
    if name == "decimal":
        return _decimal(**arg)
    if name == "split":
        return _split(arg["separator"], int(arg["index"]))
    raise StepSpecInvalid(f"unknown step {name!r}")
