"""Shared CLI plumbing: settings, services, rich output and error reporting.

Every value printed here (an error's detail, a path, a field name) goes
through :mod:`gateway.cli.render`: none of it is the CLI's own text.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from audit.errors import AuditError
from gateway.cli.config import ConfigError, database_problem, load_settings
from gateway.cli.render import line, new_console
from gateway.errors import AccordError
from gateway.services import Services, build_services
from gateway.settings import Settings

__all__ = [
    "console",
    "err_console",
    "handle_errors",
    "load_json_bytes",
    "load_json_file",
    "open_services",
    "read_file_bytes",
    "settings",
]

console = new_console()
# An error is one line however long its path: a wrapped line reads as two errors.
err_console = new_console(stderr=True)
_ERROR = ("error", "red")
P = ParamSpec("P")
R = TypeVar("R")


#: What to change when a check fails for want of something the operator provides.
_HINTS = {
    "missing_key": "the keys are read from ACCORD_KEY_DIR (default: ACCORD_DATA_DIR/keys); "
    "ACCORD_DEV_MODE=true creates missing ones",
}


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _print_config_error(exc)
        raise typer.Exit(2) from exc


def _print_config_error(exc: ConfigError) -> None:
    for text in exc.lines:
        err_console.print(line(("configuration error:", "red"), " ", text))


def open_services() -> Services:
    return build_services(settings())


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Report Accord errors as one readable line and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except AccordError as exc:
            err_console.print(line(_ERROR, " ", (exc.code, "bold"), ": ", exc.detail))
            for item in exc.extra.get("errors", [])[:10]:
                err_console.print(line("  ", item.get("field"), ": ", item.get("reason")))
            if exc.code in _HINTS:
                err_console.print(line("  ", _HINTS[exc.code]))
            raise typer.Exit(1) from exc
        except ConfigError as exc:  # raised below a command, e.g. by `accord serve`'s set-up
            _print_config_error(exc)
            raise typer.Exit(2) from exc
        except DBAPIError as exc:  # the database refused, is away, or does not exist
            away = isinstance(exc, OperationalError | InterfaceError)
            code = "database_unavailable" if away else "database_error"
            problem = database_problem(exc, _loaded_settings())
            err_console.print(line(_ERROR, " ", (code, "bold"), ": ", problem))
            raise typer.Exit(1) from exc
        except AuditError as exc:
            err_console.print(line(_ERROR, " ", (exc.code, "bold"), ": ", exc.detail))
            raise typer.Exit(1) from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = "/".join(str(p) for p in first["loc"])
            err_console.print(
                line(_ERROR, " ", ("validation_failed", "bold"), ": ", loc, ": ", first["msg"])
            )
            raise typer.Exit(1) from exc
        except OSError as exc:  # a file option naming a missing, unreadable or unwritable path
            err_console.print(line(_ERROR, " ", _os_error(exc)))
            raise typer.Exit(1) from exc

    return wrapper


def _loaded_settings() -> Settings | None:
    """The settings the failed command used (loaded once already, so this succeeds),
    to name its database in the message."""
    try:
        return load_settings()
    except ConfigError:
        return None


def _os_error(exc: OSError) -> str:
    if exc.filename is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror or exc}"


def read_file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        err_console.print(line(_ERROR, " cannot read ", str(path), ": ", exc.strerror))
        raise typer.Exit(1) from exc


def load_json_file(path: Path) -> Any:
    return load_json_bytes(path)[0]


def load_json_bytes(path: Path) -> tuple[Any, bytes]:
    """The JSON document in ``path`` and the file's bytes, read once (what an audit
    entry hashes is then exactly what was parsed)."""
    raw = read_file_bytes(path)
    try:
        return json.loads(raw.decode("utf-8")), raw
    except ValueError as exc:
        err_console.print(line(_ERROR, " ", ("malformed_json", "bold"), ": ", f"{path}: {exc}"))
        raise typer.Exit(1) from exc
