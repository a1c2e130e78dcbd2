"""JSON Schema validators that read ``pattern`` as the standard does.

A JSON Schema ``pattern`` is an ECMA-262 regular expression, in which ``$``
(without the multiline flag, which JSON Schema never sets) matches only at the
very end of the string. Python's ``$`` also matches just before a final newline,
so ``jsonschema``, which checks ``pattern`` with ``re.search``, accepts
``"12345678901\\n"`` for ``^[0-9]{11}$`` where any other validator refuses it.
``Validator`` is Draft 2020-12 with a ``pattern`` keyword that reads every
``$`` outside a character class as Python's ``\\Z``; everything else is
``jsonschema``'s own. Every JSON Schema check of department data and of
agreements goes through it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, cast

import jsonschema
from jsonschema.exceptions import ValidationError

__all__ = ["Validator", "standard_regex"]


def standard_regex(pattern: str) -> str:
    """``pattern`` with each end-of-string ``$`` written as ``\\Z`` (escaped ``\\$`` and
    a ``$`` inside ``[...]`` are literal dollars, and stay)."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]":
                # Python reads a "]" right after "[" or "[^" as a literal member.
                closing = i + (2 if pattern[i + 1] == "]" else 3)
                out.append(pattern[i:closing])
                i = closing
                continue
        elif c == "$":
            out.append(r"\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(standard_regex(pattern))


def _pattern(
    validator: Any, pattern: str, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with the standard's ``pattern`` (``extend`` is untyped; it returns a
#: class with every keyword of its base but the ones given).
Validator = cast(
    "type[jsonschema.Draft202012Validator]",
    jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator, {"pattern": _pattern}
    ),
)
