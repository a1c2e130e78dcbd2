"""Entity declarations shared by every connector kind (internal).

Each connector config lists the entities it exposes, the key and the fields a
caller may ask for. The allow-list lives here, not in each protocol module, so
that every connector refuses unknown fields and malformed keys the same way
before any byte goes to the provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.interface import ConnectorConfigError, InvalidKey, UnknownField

__all__ = ["EntitySpec", "entity", "parse_entities", "project"]

#: The shape of a subject key the exchange API accepts (``gateway.exchange.schemas``):
#: a wider default would let a binding serve keys no exchange can ask for, and a
#: key of dots alone could name a parent path on a REST provider.
_DEFAULT_KEY_PATTERN = r"[A-Za-z0-9_-]{1,128}"


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """One exposed entity: its key column/argument, allowed fields and options."""

    name: str
    key: str
    fields: tuple[str, ...]
    key_pattern: re.Pattern[str]
    options: Mapping[str, Any]

    def check_key(self, key: str, connector: str) -> str:
        if not isinstance(key, str) or self.key_pattern.fullmatch(key) is None:
            raise InvalidKey(
                f"key for entity {self.name!r} does not match its pattern", connector=connector
            )
        return key

    def check_fields(self, fields: Sequence[str], connector: str) -> tuple[str, ...]:
        if isinstance(fields, str):
            raise UnknownField("fields must be a list of names", connector=connector)
        wanted = tuple(dict.fromkeys(fields))
        if not wanted:
            raise UnknownField("no fields requested", connector=connector)
        unknown = [f for f in wanted if f not in self.fields]
        if unknown:
            raise UnknownField(
                f"entity {self.name!r} does not expose {sorted(unknown)}", connector=connector
            )
        return wanted


def parse_entities(config: Mapping[str, Any], connector: str) -> dict[str, EntitySpec]:
    raw = config.get("entities")
    if not isinstance(raw, Mapping) or not raw:
        raise ConnectorConfigError("config needs a non-empty 'entities' map", connector=connector)
    out: dict[str, EntitySpec] = {}
    for name, spec in raw.items():
        if not isinstance(spec, Mapping):
            raise ConnectorConfigError(f"entity {name!r} must be a map", connector=connector)
        key = spec.get("key")
        fields = spec.get("fields")
        if not isinstance(key, str) or not key:
            raise ConnectorConfigError(f"entity {name!r} needs a 'key'", connector=connector)
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ConnectorConfigError(
                f"entity {name!r} needs a 'fields' list of names", connector=connector
            )
        try:
            pattern = re.compile(str(spec.get("key_pattern", _DEFAULT_KEY_PATTERN)))
        except re.error as exc:
            raise ConnectorConfigError(
                f"entity {name!r} has a bad key_pattern", connector=connector
            ) from exc
        options = {k: v for k, v in spec.items() if k not in {"key", "fields", "key_pattern"}}
        out[str(name)] = EntitySpec(str(name), key, tuple(fields), pattern, options)
    return out


def project(record: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Keep only requested top-level fields, even if the source sent more."""
    return {f: record[f] for f in fields if f in record}


def entity(entities: Mapping[str, EntitySpec], name: str, connector: str) -> EntitySpec:
    try:
        return entities[name]
    except KeyError:
        raise UnknownField(f"unknown entity {name!r}", connector=connector) from None
