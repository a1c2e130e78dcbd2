"""Department-system adapters and declarative schema mapping.

Imports nothing from ``gateway`` or ``audit``: a connector is a plain adapter
that the gateway drives, and it can be tested against a department system on
its own.
"""

from connectors.config import build_connector, load_config
from connectors.interface import (
    CircuitOpen,
    Connector,
    ConnectorError,
    EntitySchema,
    FetchContext,
    FetchResult,
    Health,
    MappingError,
    Page,
)

__all__ = [
    "CircuitOpen",
    "Connector",
    "ConnectorError",
    "EntitySchema",
    "FetchContext",
    "FetchResult",
    "Health",
    "MappingError",
    "Page",
    "build_connector",
    "load_config",
]
