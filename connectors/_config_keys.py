"""The keys each connector kind's config takes, and the check that refuses any other (internal).

A key Accord does not read is not harmless: ``retries: {atempts: 1}`` leaves the
default of three attempts in force while the integrator believes retries are
off, and ``tls: {ca_fle: ...}`` leaves the public CAs trusted. So every key of a
config, down through its sections and each entity, must be one the connector
code reads; anything else is refused by name and place (``retries.atempts``).

The tables follow what the code reads (``resilience.py`` for the shared
sections, ``_tls.py``, ``_entities.py`` and each kind's module): a new option
goes in here with the code that reads it. Only Accord's own keys are checked.
A value read whole (a list of fields, a path, a token) is not looked into, entity
names are the administrator's own, and values, placeholders included, are
never read here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from connectors.interface import ConnectorConfigError

__all__ = ["CONFIG_KEYS", "Named", "Section", "verify_config_keys"]


@dataclass(frozen=True, slots=True)
class Section:
    """A map of Accord's own keys: each names the section its value is, or ``None``
    for a value read whole (a number, a path, a list), whose inside is not checked."""

    keys: Mapping[str, Section | Named | None]


@dataclass(frozen=True, slots=True)
class Named:
    """A map whose keys the administrator chooses (entity names); each value is ``each``."""

    each: Section


def _whole(*names: str) -> dict[str, None]:
    return dict.fromkeys(names)


#: ``connectors/_tls.py``: server verification against a private CA, and mTLS.
_TLS = Section(_whole("ca_file", "client_cert", "client_key"))

#: ``ResilienceSettings.from_config``: read by every kind.
_SHARED: dict[str, Section | Named | None] = {
    **_whole("kind", "name", "max_concurrency", "max_response_bytes"),
    "timeouts": Section(_whole("connect", "read", "total")),
    "retries": Section(_whole("attempts", "backoff", "max_wait")),
    "breaker": Section(_whole("failures", "reset_after")),
}

#: ``parse_entities``: what every entity has; the rest are the kind's entity options.
_ENTITY = _whole("key", "key_pattern", "fields")


def _kind(top: Mapping[str, Section | None], entity_options: Sequence[str]) -> Section:
    entity = Section({**_ENTITY, **_whole(*entity_options)})
    return Section({**_SHARED, **top, "entities": Named(entity)})


#: Per kind, every key its config may hold.
CONFIG_KEYS: Mapping[str, Section] = MappingProxyType(
    {
        "rest": _kind(
            {
                **_whole("base_url", "health_path", "openapi_path"),
                "auth": Section(_whole("token", "header", "scheme")),
                "tls": _TLS,
            },
            (
                "path",
                "list_path",
                "fields_param",
                "record_path",
                "records_path",
                "next_path",
                "limit_param",
                "cursor_param",
                "schema",
            ),
        ),
        "sql": _kind(_whole("url", "max_rows"), ("table", "schema")),
        "soap": _kind(
            {**_whole("wsdl", "address", "ping_operation", "not_found_faults"), "tls": _TLS},
            ("operation", "result_path", "idempotent"),
        ),
        "csv": _kind(_whole("directory", "max_rows"), ("pattern", "delimiter", "encoding")),
    }
)

#: How many unknown keys one refusal names; the count of the rest is given.
_NAMED = 5
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")

_Path = tuple[str, ...]


def verify_config_keys(config: Mapping[str, Any]) -> None:
    """Refuse a config holding a key its kind does not read, naming where it is.

    A config of no known kind is left to the builder, which refuses it; a section
    of the wrong type (``timeouts: 5``) too, which names the section.
    """
    kind = config.get("kind")
    if not isinstance(kind, str) or kind not in CONFIG_KEYS:
        return
    unknown = list(_unknown(config, CONFIG_KEYS[kind], ()))
    if not unknown:
        return
    named = ", ".join(_describe(path, kind) for path in unknown[:_NAMED])
    more = f" and {len(unknown) - _NAMED} more" if len(unknown) > _NAMED else ""
    noun = "key" if len(unknown) == 1 else "keys"
    raise ConnectorConfigError(
        f"{kind} connector config has unknown {noun} {named}{more}",
        connector=str(config.get("name", kind)),
    )


def _unknown(value: Any, section: Section, path: _Path) -> Iterator[_Path]:
    """The place of every key under ``value`` that ``section`` does not describe.

    Follows the description, not the value, so it goes no deeper than the
    description does, however deep the value is.
    """
    if not isinstance(value, Mapping):
        return
    for key, inner in value.items():
        if not isinstance(key, str) or key not in section.keys:
            yield (*path, str(key))
            continue
        known = section.keys[key]
        if isinstance(known, Section):
            yield from _unknown(inner, known, (*path, key))
        elif isinstance(known, Named) and isinstance(inner, Mapping):
            for name, each in inner.items():
                yield from _unknown(each, known.each, (*path, key, str(name)))


def _describe(path: _Path, kind: str) -> str:
    """``'retries.atempts' (did you mean 'attempts'?)``: the place, then a hint."""
    shown = "'" + ".".join(_shown(p) for p in path) + "'"
    known = _keys_at(CONFIG_KEYS[kind], path[:-1])
    key = path[-1]
    others = [
        k for k, root in CONFIG_KEYS.items() if k != kind and key in _keys_at(root, path[:-1])
    ]
    if others:
        return f"{shown} (only {' and '.join(others)} connectors read it)"
    close = difflib.get_close_matches(key, list(known), n=1)
    if close:
        return f"{shown} (did you mean '{close[0]}'?)"
    return f"{shown} (the keys there are {', '.join(known)})"


def _keys_at(root: Section, parents: _Path) -> Mapping[str, Section | Named | None]:
    """The keys a config of ``root``'s kind takes at ``parents`` (none if it has no such place)."""
    node: Section | Named | None = root
    for part in parents:
        if isinstance(node, Section):
            node = node.keys.get(part)
        elif isinstance(node, Named):
            node = node.each  # ``part`` is an entity's name
    return node.keys if isinstance(node, Section) else {}


def _shown(part: str) -> str:
    """A key as the refusal names it: plain names as they are, anything else quoted
    and cut short, so a refusal stays one readable line."""
    return part if _PLAIN_KEY.fullmatch(part) else repr(part[:64])
