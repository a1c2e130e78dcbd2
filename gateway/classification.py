"""Classification schemes and the labels canonical schemas put on each field.

A scheme is an ordered list of levels plus the caveats and personal-data
categories it knows. Labels live on canonical JSON Schemas under the
``x-accord-classification`` keyword (see docs/conventions.md). A field
without a label counts as the scheme's highest level, and a label that cannot
be read as written is refused, never read as a weaker one: fail closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ValidationFailed

__all__ = [
    "LABEL_KEYWORD",
    "SCHEME_DIR",
    "ClassificationScheme",
    "FieldLabel",
    "default_scheme",
    "load_scheme",
]

LABEL_KEYWORD = "x-accord-classification"
SCHEME_DIR = Path(__file__).resolve().parent.parent / "schemas" / "classification"
PERSONAL_CATEGORIES = ("identifier", "quasi_identifier", "sensitive", "special")


@dataclass(frozen=True)
class FieldLabel:
    level: str
    caveats: frozenset[str] = field(default_factory=frozenset)
    personal: str | None = None
    labelled: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "caveats": sorted(self.caveats),
            "personal": self.personal,
            "labelled": self.labelled,
        }


@dataclass(frozen=True)
class ClassificationScheme:
    name: str
    levels: tuple[str, ...]
    caveats: frozenset[str]
    legal_basis_required: frozenset[str] = frozenset({"sensitive", "special"})

    def __post_init__(self) -> None:
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise ValidationFailed("a scheme needs distinct levels", code="bad_scheme")
        unknown = self.legal_basis_required - set(PERSONAL_CATEGORIES)
        if unknown:
            raise ValidationFailed(
                f"unknown personal categories {sorted(unknown)}", code="bad_scheme"
            )

    @property
    def highest(self) -> str:
        return self.levels[-1]

    def rank(self, level: str) -> int:
        try:
            return self.levels.index(level)
        except ValueError:
            raise ValidationFailed(
                f"{level!r} is not a level of scheme {self.name!r} ({', '.join(self.levels)})",
                code="unknown_classification_level",
            ) from None

    def verify_level(self, level: str) -> None:
        self.rank(level)

    def dominates(self, higher: str, lower: str) -> bool:
        return self.rank(higher) >= self.rank(lower)

    def label_from_schema(self, prop: Mapping[str, Any]) -> FieldLabel:
        """The field's label; a field with none counts as the highest level.

        A label that is there but cannot be read as written (a level this scheme
        does not know, no level, caveats that are not a list of names, an unknown
        personal category) refuses the schema: read as "unlabelled" it would lose
        its caveats and personal-data category, and a caller cleared for the top
        level would get a field that needs a caveat it lacks."""
        raw = prop.get(LABEL_KEYWORD) if isinstance(prop, Mapping) else None
        if raw is None:
            return FieldLabel(self.highest, labelled=False)
        if not isinstance(raw, Mapping):
            raise ValidationFailed(f"{LABEL_KEYWORD} must be an object", code="bad_label")
        level = raw.get("level")
        if not isinstance(level, str):
            raise ValidationFailed("a classification label needs a level", code="bad_label")
        self.verify_level(level)  # unknown_classification_level
        caveats = raw.get("caveats", [])
        if not isinstance(caveats, list) or not all(isinstance(c, str) and c for c in caveats):
            raise ValidationFailed("caveats must be a list of caveat names", code="bad_label")
        personal = raw.get("personal")
        if personal is not None and personal not in PERSONAL_CATEGORIES:
            raise ValidationFailed(f"unknown personal category {personal!r}", code="bad_label")
        return FieldLabel(level, frozenset(caveats), personal)

    def field_labels(self, model_schema: Mapping[str, Any]) -> dict[str, FieldLabel]:
        """Labels of every top-level property of a canonical model schema."""
        props = model_schema.get("properties", {})
        return {name: self.label_from_schema(p) for name, p in props.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "levels": list(self.levels),
            "caveats": sorted(self.caveats),
            "legal_basis_required": sorted(self.legal_basis_required),
        }


def load_scheme(path: Path) -> ClassificationScheme:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationFailed(f"cannot read scheme {path}: {exc}", code="bad_scheme") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("levels"), list):
        raise ValidationFailed(f"{path}: a scheme needs name and levels", code="bad_scheme")
    return ClassificationScheme(
        name=str(doc.get("name", path.stem)),
        levels=tuple(str(x) for x in doc["levels"]),
        caveats=frozenset(str(x) for x in doc.get("caveats", [])),
        legal_basis_required=frozenset(
            str(x) for x in doc.get("legal_basis_required", ["sensitive", "special"])
        ),
    )


def default_scheme() -> ClassificationScheme:
    return load_scheme(SCHEME_DIR / "default.yaml")
