"""Build a connector from its declarative config (``kind`` + settings).

Connector configs are YAML documents an administrator reviews alongside the
agreement. Secrets and endpoints are not written into them: ``${VAR}`` and
``${VAR:-default}`` placeholders are filled from an explicit environment
mapping at load time, and relative file paths (WSDL, drop folder) are
resolved against the config file's own directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from connectors.interface import Connector, ConnectorConfigError

__all__ = ["KINDS", "build_connector", "expand_placeholders", "load_config"]

KINDS = ("rest", "sql", "soap", "csv")
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")
_PATH_KEYS = ("wsdl", "directory")


def _expand(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConnectorConfigError(f"config placeholder ${{{name}}} has no value")

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    return value


def expand_placeholders(config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Fill ``${VAR}`` placeholders of a stored config from ``env`` (the gateway's own)."""
    out: dict[str, Any] = _expand(dict(config), env)
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
    """The connector named by ``config['kind']``, validated and ready to use."""
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
