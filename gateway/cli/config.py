"""Configuration mistakes as one line that names the ``ACCORD_*`` variable.

An operator sets some thirty variables; "Input should be greater than or equal
to 0" or a driver's traceback leaves them guessing which one is wrong. Every
message here names the variable and says what is wrong with it, and never shows
a value that may hold a secret (a password in ``ACCORD_DATABASE_URL``, the
pseudonym secret).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from audit import NoteVerifier
from audit.errors import AuditError
from gateway.settings import Settings

__all__ = ["ConfigError", "database_problem", "load_settings"]

PREFIX = Settings.model_config.get("env_prefix", "ACCORD_")
DATABASE_URL = f"{PREFIX}DATABASE_URL"
_URL_FORM = "postgresql+psycopg://USER@HOST:PORT/DATABASE, or empty for SQLite in ACCORD_DATA_DIR"


class ConfigError(Exception):
    """One or more configuration mistakes, each a line naming its variable."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def variable(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def load_settings() -> Settings:
    """``Settings()``, plus the checks pydantic cannot make: the database URL's
    scheme and driver, the witnesses' verifier keys. Raises ``ConfigError``."""
    try:
        cfg = Settings()
    except ValidationError as exc:
        raise ConfigError(list(_validation_lines(exc))) from exc
    except SettingsError as exc:
        raise ConfigError([_settings_error_line(exc)]) from exc
    problems = [*_database_url_problems(cfg), *_witness_key_problems(cfg)]
    if problems:
        raise ConfigError(problems)
    return cfg


def _validation_lines(exc: ValidationError) -> Iterator[str]:
    for error in exc.errors()[:10]:
        msg = error["msg"].removeprefix("Value error, ")
        loc = error["loc"]
        if not loc:  # a check across fields: its message names the variables itself
            yield msg
            continue
        where = variable(str(loc[0]))
        if len(loc) > 1:
            where += " item " + "/".join(str(p) for p in loc[1:])
        yield f"{where}: {msg}"


_FIELD = re.compile(r'field "([^"]+)"')


def _settings_error_line(exc: SettingsError) -> str:
    """pydantic-settings reads list and object values as JSON and says only which
    field failed; the value itself is not repeated (it may be a secret)."""
    found = _FIELD.search(str(exc))
    where = variable(found.group(1)) if found else f"an {PREFIX}* variable"
    if isinstance(exc.__cause__, json.JSONDecodeError):
        return (
            f"{where}: not valid JSON ({exc.__cause__.msg}); a list is written as JSON, "
            f"for example {where}='[\"https://witness.example/a\"]'"
        )
    return f"{where}: cannot be read ({exc.__cause__ or exc})"


def _database_url_problems(cfg: Settings) -> Iterator[str]:
    try:
        url = make_url(cfg.resolved_database_url)
    except ArgumentError:
        yield f"{DATABASE_URL}: not a database URL; expected {_URL_FORM}"
        return
    try:
        dialect = url.get_dialect()
    except ArgumentError:  # NoSuchModuleError: an unknown scheme such as postgres://
        yield (f"{DATABASE_URL}: unknown database scheme {url.drivername!r}; expected {_URL_FORM}")
        return
    try:
        dialect.import_dbapi()
    except ImportError:
        yield (
            f"{DATABASE_URL}: the driver for {url.drivername!r} is not installed; "
            f"expected {_URL_FORM}"
        )


def _witness_key_problems(cfg: Settings) -> Iterator[str]:
    for i, vkey in enumerate(cfg.witness_vkeys):
        try:
            NoteVerifier.from_vkey(vkey)
        except AuditError as exc:
            yield (
                f"{variable('witness_vkeys')} item {i}: {exc.detail} "
                "(expected a C2SP note verifier key, NAME+KEYID+BASE64KEY)"
            )


def database_problem(exc: DBAPIError, cfg: Settings | None) -> str:
    """The driver's own first line (it says what failed: refused, no such database,
    no such role, permission denied), after the variable and the URL without its
    password. A password the driver quoted back anyway is blanked."""
    reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    text = reason[0] if reason else type(exc).__name__
    if cfg is None:
        return f"{DATABASE_URL}: {text}"
    url = make_url(cfg.resolved_database_url)
    shown = url.render_as_string(hide_password=True)
    if url.password:
        text = text.replace(str(url.password), "***")
    if not cfg.database_url:
        return f"the SQLite database in {PREFIX}DATA_DIR ({url.database}): {text}"
    return f"{DATABASE_URL} ({shown}): {text}"
