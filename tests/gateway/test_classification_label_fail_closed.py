"""A classification label that cannot be read as written refuses the schema.

``label_from_schema`` once read a label whose level the scheme does not know (a
typo, another scheme's "top-secret") as "unlabelled": the highest level, but
with its caveats and personal-data category gone, so a caller cleared for the
top level would get a field that needs a caveat it lacks, with no legal basis
asked for. Now such a label is refused; a field with no label at all still
counts as the highest level.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.classification import LABEL_KEYWORD, FieldLabel, default_scheme
from gateway.errors import ValidationFailed

SCHEME = default_scheme()


def _label(**raw: Any) -> dict[str, Any]:
    return {"type": "string", LABEL_KEYWORD: raw}


def test_unknown_level_with_caveats_is_refused_not_read_as_unlabelled() -> None:
    prop = _label(level="top-secret", caveats=["health"], personal="special")
    with pytest.raises(ValidationFailed) as err:
        SCHEME.label_from_schema(prop)
    assert err.value.code == "unknown_classification_level"
    with pytest.raises(ValidationFailed):
        SCHEME.field_labels({"properties": {"diagnosis": prop}})


@pytest.mark.parametrize(
    "raw",
    [
        {"caveats": ["health"], "personal": "special"},  # no level
        {"level": 3, "caveats": ["health"]},
        {"level": "internal", "caveats": "health"},  # once read as {h, e, a, l, t}
        {"level": "internal", "caveats": [""]},
        {"level": "internal", "personal": "very"},
    ],
    ids=repr,
)
def test_malformed_label_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as err:
        SCHEME.label_from_schema({LABEL_KEYWORD: raw})
    assert err.value.code == "bad_label"


def test_label_not_an_object_is_refused() -> None:
    with pytest.raises(ValidationFailed) as err:
        SCHEME.label_from_schema({LABEL_KEYWORD: "restricted"})
    assert err.value.code == "bad_label"


def test_missing_label_is_still_the_highest_level() -> None:
    assert SCHEME.label_from_schema({"type": "string"}) == FieldLabel(
        SCHEME.highest, labelled=False
    )


def test_known_label_keeps_its_caveats_and_category() -> None:
    label = SCHEME.label_from_schema(
        _label(level="confidential", caveats=["health"], personal="special")
    )
    assert label == FieldLabel("confidential", frozenset({"health"}), "special")
