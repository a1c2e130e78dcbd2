"""``pattern`` as JSON Schema defines it: ``$`` is the end of the string, never the
place before a final newline (which Python's ``re`` also lets it match)."""

from __future__ import annotations

import re
import string

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.mapping.standard_pattern import Validator, standard_regex


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"^[0-9]{11}$", r"^[0-9]{11}\Z"),
        (r"^a$|^b$", r"^a\Z|^b\Z"),
        (r"^price \$[0-9]+$", r"^price \$[0-9]+\Z"),  # an escaped dollar is a dollar
        (r"^[$]+$", r"^[$]+\Z"),  # so is one in a class
        (r"^[]$]$", r"^[]$]\Z"),  # Python reads "]" first in a class as a member
        (r"^[^]$]+$", r"^[^]$]+\Z"),
        (r"^[\]$]+$", r"^[\]$]+\Z"),
        (r"^[a-z]+", r"^[a-z]+"),
    ],
)
def test_only_end_of_string_dollars_are_rewritten(pattern: str, expected: str) -> None:
    assert standard_regex(pattern) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [("12345678901", True), ("12345678901\n", False), ("1234567890\n1", False), ("x", False)],
)
def test_a_final_newline_does_not_satisfy_dollar(value: str, ok: bool) -> None:
    schema = {"type": "string", "pattern": r"^[0-9]{11}$"}
    assert Validator(schema).is_valid(value) is ok
    # what the plain library answers, for the record: it takes the final newline
    assert jsonschema.Draft202012Validator(schema).is_valid("12345678901\n")


@given(
    st.sampled_from([r"^[a-c]+$", r"^a|b$", r"x\$$", r"^[$a]*$", r"[0-9]{2}$", r"^$"]),
    st.text(alphabet=string.ascii_lowercase[:4] + "$x0123\n", max_size=8),
)
def test_the_answer_is_the_one_a_dollar_at_the_very_end_gives(pattern: str, value: str) -> None:
    """Everywhere but before a final newline, ``$`` and ``\\Z`` agree; there, only the end
    of the string counts."""
    ours = Validator({"pattern": pattern}).is_valid(value)
    python = re.search(pattern, value) is not None
    assert ours == (re.search(standard_regex(pattern), value) is not None)
    if not value.endswith("\n"):
        assert ours == python
    else:
        assert not ours or python  # never more lenient than Python's reading


def test_property_names_and_nested_patterns_use_it_too() -> None:
    schema = {
        "type": "object",
        "propertyNames": {"pattern": r"^[a-z]+$"},
        "additionalProperties": {"type": "string", "pattern": r"^[A-Z]+$"},
    }
    v = Validator(schema)
    assert v.is_valid({"name": "ADA"})
    assert not v.is_valid({"name\n": "ADA"})
    assert not v.is_valid({"name": "ADA\n"})
