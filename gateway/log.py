"""structlog set-up: JSON lines in production, readable console output in dev.

A request id is bound per request through contextvars, so it appears on every
line logged while serving that request. Exchanged field values are never passed
to the logger; ``redact_values`` is a last line of defence that drops any
key named like a record payload.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]

_PAYLOAD_KEYS = frozenset({"records", "record", "data", "values", "body", "payload"})


def redact_values(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in _PAYLOAD_KEYS & event.keys():
        event[key] = "[redacted]"
    return event


def configure_logging(*, json_logs: bool, level: int = logging.INFO) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_values,
    ]
    if json_logs:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Whatever stderr is when a line is written, not when logging was set up (a
        # stream swapped since, a test's captured one, may be closed by then).
        logger_factory=lambda *_args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
