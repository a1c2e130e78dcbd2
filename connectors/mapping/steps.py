"""The closed vocabulary of value transforms a mapping step may name.

Each step compiles once into a plain function ``value -> value`` that raises
``StepFailed`` when the value does not fit (a bad date, an unknown code). The
list is fixed on purpose: an officer reviewing a mapping must be able to read
every possible effect, so there is no expression language, no jq and no
callback into user code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["Step", "StepFailed", "compile_step"]

Step = Callable[[Any], Any]


class StepFailed(Exception):
    """A value did not fit a step; the message names the step, never the value."""


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
    try:
        return int(_text(value, "int").strip())
    except ValueError:
        raise StepFailed("int: not an integer") from None


def _decimal(
    places: int | None = None,
    shift: int = 0,
    decimal_separator: str = ".",
    group_separator: str = "",
) -> Step:
    quantum = Decimal(1).scaleb(-places) if places is not None else None

    def step(value: Any) -> Any:
        if isinstance(value, bool):
            raise StepFailed("decimal does not take booleans")
        if isinstance(value, float):
            value = repr(value)
        text = _text(value, "decimal").strip()
        if group_separator:
            text = text.replace(group_separator, "")
        if decimal_separator != ".":
            if "." in text:
                raise StepFailed("decimal: unexpected '.'")
            text = text.replace(decimal_separator, ".")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise StepFailed("decimal: not a number") from None
        if not number.is_finite():
            raise StepFailed("decimal: not a finite number")
        if shift:
            number = number.scaleb(shift)
        if quantum is not None:
            number = number.quantize(quantum)
        return format(number, "f")

    return step


def _date(fmt: str) -> Step:
    def step(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        try:
            return dt.datetime.strptime(_text(value, "date"), fmt).date().isoformat()
        except ValueError:
            raise StepFailed(f"date: does not match {fmt!r}") from None

    return step


def _format_date(fmt: str) -> Step:
    """ISO date in, the consumer's own date format out (canonical → consumer)."""

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
    def step(value: Any) -> Any:
        try:
            parsed = (
                value
                if isinstance(value, dt.datetime)
                else dt.datetime.strptime(_text(value, "datetime"), fmt)
            )
        except ValueError:
            raise StepFailed(f"datetime: does not match {fmt!r}") from None
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
    """One validated step description → its function (spec validation ran first)."""
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
                raise KeyError(f"unknown code list {arg!r}")
            return _lookup(codelists[arg], arg)
        return _lookup(arg, "inline")
    if name == "decimal":
        return _decimal(**arg)
    if name == "split":
        return _split(arg["separator"], int(arg["index"]))
    raise KeyError(f"unknown step {name!r}")
