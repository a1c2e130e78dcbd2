"""Build a connector from its declarative config (``kind`` + settings).

Connector configs are YAML documents an administrator reviews alongside the
agreement. Secrets and endpoints are not written into them: ``${VAR}`` and
``${VAR:-default}`` placeholders are filled from an explicit environment
mapping at load time, and relative file paths (WSDL, drop folder) are
resolved against the config file's own directory.

A binding's config is written by an administrator but expanded from the
gateway's own environment, which also holds the gateway's settings and every
other provider's secrets. So a stored config is scoped to its provider: it may
name only variables under the provider's prefix (``civil-registry`` →
``CIVIL_REGISTRY_``), never one that a more specific department's prefix claims,
and never an ``ACCORD_`` variable. The scope is checked before a variable is
looked up, so an out-of-scope name is never read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from connectors._config_keys import verify_config_keys
from connectors.interface import Connector, ConnectorConfigError

__all__ = [
    "KINDS",
    "build_connector",
    "check_config",
    "expand_placeholders",
    "load_config",
    "placeholder_prefix",
    "verify_config_keys",
    "verify_placeholder_scope",
]

KINDS = ("rest", "sql", "soap", "csv")
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")
_PATH_KEYS = ("wsdl", "directory")
#: Anything that opens like a placeholder, whatever its case, nesting or position
#: (inside another's default too): the write-time scan, stricter than expansion.
_ANY_NAME = re.compile(r"\$\{([^}:]*)")
#: The gateway's own settings (database URL, pseudonym secret, ...): no provider's.
_GATEWAY_PREFIX = "ACCORD_"


def placeholder_prefix(provider: str) -> str:
    """The prefix of the variables ``provider``'s connector config may name."""
    return provider.upper().replace("-", "_") + "_"


def _verify_name(name: str, provider: str, others: Iterable[str]) -> None:
    """Raise unless ``name`` is a variable ``provider``'s config may read.

    The owner of a name is the department with the longest matching prefix, so a
    department ``civil`` cannot reach ``CIVIL_REGISTRY_TOKEN`` once
    ``civil-registry`` is registered.
    """
    prefix = placeholder_prefix(provider)
    shown = name if re.fullmatch(r"[A-Za-z0-9_]{1,128}", name) else "(malformed)"
    if name.startswith(_GATEWAY_PREFIX) or prefix.startswith(_GATEWAY_PREFIX):
        raise ConnectorConfigError(
            f"config placeholder ${{{shown}}} names a gateway setting; "
            f"{provider}'s placeholders must start with {prefix} and never {_GATEWAY_PREFIX}"
        )
    if not name.startswith(prefix):
        raise ConnectorConfigError(
            f"config placeholder ${{{shown}}} is outside {provider}'s scope; "
            f"its placeholders must start with {prefix}"
        )
    for other in others:
        theirs = placeholder_prefix(other)
        if other != provider and len(theirs) > len(prefix) and name.startswith(theirs):
            raise ConnectorConfigError(
                f"config placeholder ${{{shown}}} belongs to {other} ({theirs}), "
                f"not to {provider} ({prefix})"
            )


def _strings(value: Any) -> Iterable[str]:
    """Every string value of a config, keys excluded (keys are never expanded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def verify_placeholder_scope(
    config: Mapping[str, Any], provider: str, *, others: Iterable[str] = ()
) -> None:
    """Refuse a config that names a variable outside ``provider``'s scope.

    Stricter than expansion: any ``${`` followed by a name counts, lower-case or
    inside another placeholder's default, so what is stored is plainly in scope.
    ``others`` are the other registered departments, whose prefixes are carved out.
    """
    others = list(others)
    for text in _strings(dict(config)):
        for m in _ANY_NAME.finditer(text):
            _verify_name(m.group(1), provider, others)


def _expand(value: Any, env: Mapping[str, str], scope: tuple[str, list[str]] | None = None) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if scope is not None:
                _verify_name(name, *scope)  # before the lookup: never read out of scope
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConnectorConfigError(f"config placeholder ${{{name}}} has no value")

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, env, scope) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env, scope) for k, v in value.items()}
    return value


def expand_placeholders(
    config: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    provider: str,
    others: Iterable[str] = (),
) -> dict[str, Any]:
    """Fill the ``${VAR}`` placeholders of ``provider``'s stored config from ``env``
    (the gateway's own), refusing any variable outside the provider's scope.

    Checked here too, not only when the binding is written: a row stored before
    the rule, or straight into the database, must not read the gateway's secrets.
    """
    out: dict[str, Any] = _expand(dict(config), env, (provider, list(others)))
    return out


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a connector config file, fill placeholders, resolve relative paths."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConnectorConfigError(f"cannot read connector config {path.name}") from exc
    if not isinstance(raw, dict):
        raise ConnectorConfigError(f"connector config {path.name} is not a map")
    config: dict[str, Any] = _expand(raw, os.environ if env is None else env)
    for key in _PATH_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            config[key] = str((path.parent / value).resolve())
    return config


def build_connector(config: Mapping[str, Any]) -> Connector:
    """The connector named by ``config['kind']``, validated and ready to use.

    A key the kind does not read is refused first: a misspelt ``retries`` or
    ``tls`` setting would otherwise leave its default silently in force.
    """
    verify_config_keys(config)
    try:
        return _build(config)
    except (AttributeError, TypeError, ValueError) as exc:
        # A value of the wrong shape that no check of the kind's foresaw (a list
        # where a map belongs): still the config's fault, never a crash.
        raise ConnectorConfigError(
            f"connector config has a value of the wrong type ({type(exc).__name__})",
            connector=str(config.get("name", config.get("kind", "connector"))),
        ) from exc


#: What stands in for a placeholder without a default that opens a value under
#: these keys, so the value still has the shape its key needs; anywhere else a
#: placeholder stands for a word. Building opens no connection, so none is used.
_STAND_INS = {
    "base_url": "https://stand-in.invalid",
    "address": "https://stand-in.invalid",
    "url": "postgresql+psycopg://stand-in.invalid/stand-in",
    "directory": "/stand-in",
    **dict.fromkeys(
        (
            "connect",
            "read",
            "total",
            "attempts",
            "backoff",
            "max_wait",
            "failures",
            "reset_after",
            "max_concurrency",
            "max_response_bytes",
            "max_rows",
        ),
        "1",
    ),
}
#: Files the build loads: named by a placeholder, they exist only where it runs.
_FILE_KEYS = ("wsdl", "ca_file", "client_cert", "client_key")


def _stand_in(value: Any, key: str, unresolved: set[str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            default = m.group(2)
            if default:
                return default
            unresolved.add(key)
            return _STAND_INS.get(key, "stand-in") if m.start() == 0 else "stand-in"

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, list):
        return [_stand_in(v, key, unresolved) for v in value]
    if isinstance(value, dict):
        return {k: _stand_in(v, str(k), unresolved) for k, v in value.items()}
    return value


def check_config(config: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Build the connector a stored config describes, without the environment, and
    return each entity's exposed fields; raise ``ConnectorConfigError`` if it cannot
    be built.

    The environment holds the gateway's and every provider's secrets, so nothing is
    read from it: a placeholder is taken at its default, or else by a stand-in of
    the shape its key needs (a URL, a number). So every wrong type, zero cap, bad
    pattern, missing or unknown key or WSDL operation that does not exist is found
    when the binding is written, not by the first exchange. What only the provider's side
    can tell (an endpoint, a token, a database's tables, a drop folder's files) and
    files named by a placeholder are found when the connector is first used.
    """
    from connectors._entities import parse_entities
    from connectors.resilience import ResilienceSettings

    verify_config_keys(config)  # before the stand-ins, and on the path without a WSDL too
    unresolved: set[str] = set()
    trial: dict[str, Any] = _stand_in(dict(config), "", unresolved)
    name = str(trial.get("name", trial.get("kind", "connector")))
    tls = trial.get("tls")
    if isinstance(tls, dict) and unresolved & set(_FILE_KEYS):
        trial["tls"] = None  # its files are loaded where the connector runs
    if trial.get("kind") == "soap" and "wsdl" in unresolved:
        try:  # no WSDL to build with here: what does not need one
            ResilienceSettings.from_config(trial)
            entities = parse_entities(trial, name)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ConnectorConfigError("connector config has a value of the wrong type") from exc
        return {n: e.fields for n, e in entities.items()}
    connector = build_connector(trial)
    _discard(connector)
    return {n: e.fields for n, e in parse_entities(trial, name).items()}


def _discard(connector: Connector) -> None:
    """Let go of a connector built only to be checked: building opened nothing, but a
    SQL connector's engine holds a (still empty) pool."""
    engine = getattr(connector, "engine", None)
    dispose = getattr(engine, "dispose", None)
    if callable(dispose):
        dispose()


def _build(config: Mapping[str, Any]) -> Connector:
    kind = config.get("kind")
    if kind == "rest":
        from connectors.rest import RestConnector

        return RestConnector(config)
    if kind == "sql":
        from connectors.sql import SqlConnector

        return SqlConnector(config)
    if kind == "soap":
        from connectors.soap import SoapConnector

        return SoapConnector(config)
    if kind == "csv":
        from connectors.csvdrop import CsvConnector

        return CsvConnector(config)
    raise ConnectorConfigError(f"unknown connector kind {kind!r}; expected one of {KINDS}")
