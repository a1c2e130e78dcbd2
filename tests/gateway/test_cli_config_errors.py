"""Configuration mistakes: a line or two naming the ``ACCORD_*`` variable, never a
traceback, never a password, and a non-zero exit.

Each case is one the acceptance review made with the real ``accord`` command
(``accord serve`` with one worker printed a 47-line traceback for missing key
files; a database on a closed port, 480 lines).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests._support.servers import free_port

ACCORD = str(Path(sys.executable).parent / "accord")
PASSWORD = "s3cr3t-pw-7f"
SECRET = "0123456789abcdef0123456789abcdef0123"


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ACCORD_") or key in {"ACCORD_OPA_BIN", "ACCORD_REQUIRE_NATIVE"}
    }
    base.update(
        ACCORD_DATA_DIR=str(tmp_path / "data"), ACCORD_PSEUDONYM_SECRET=SECRET, COLUMNS="80"
    )
    return subprocess.run(
        [ACCORD, *args], cwd=tmp_path, env={**base, **env}, capture_output=True, text=True,
        timeout=90,
    )  # fmt: skip


def serve(tmp_path: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(tmp_path, "serve", "--port", str(free_port()), *extra, **env)


def assert_names(result: subprocess.CompletedProcess[str], *words: str, lines: int = 2) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out and 'File "' not in out, out
    assert PASSWORD not in out
    shown = [text for text in result.stderr.splitlines() if text.strip()]
    assert 1 <= len(shown) <= lines, out
    for word in words:
        assert word in result.stderr, out


def closed_port_url() -> str:
    return f"postgresql+psycopg://accord:{PASSWORD}@127.0.0.1:{free_port()}/accord"


def test_serve_with_one_worker_and_no_key_files_says_so_in_two_lines(tmp_path: Path) -> None:
    result = serve(tmp_path)
    assert_names(result, "missing_key", "gateway.pem", "ACCORD_KEY_DIR")


def test_serve_with_two_workers_and_no_key_files_says_the_same(tmp_path: Path) -> None:
    result = serve(tmp_path, "--workers", "2")  # after a line warning about SQLite
    assert_names(result, "missing_key", "gateway.pem", "ACCORD_KEY_DIR", lines=3)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["db", "upgrade"], {}),
        (["dept", "list"], {}),
        (["serve", "--port", "0"], {"ACCORD_DEV_MODE": "true"}),
    ],
    ids=["db-upgrade", "dept-list", "serve"],
)
def test_database_on_a_closed_port_is_one_line_without_the_password(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    result = run(tmp_path, *args, ACCORD_DATABASE_URL=closed_port_url(), **env)
    assert_names(result, "database_unavailable", "ACCORD_DATABASE_URL", "refused", lines=1)
    assert "accord:***@127.0.0.1" in result.stderr


@pytest.mark.parametrize("args", [["db", "upgrade"], ["serve", "--port", "0"]])
def test_postgres_scheme_names_the_variable_and_the_scheme(tmp_path: Path, args: list[str]) -> None:
    url = f"postgres://accord:{PASSWORD}@127.0.0.1:5432/accord"
    result = run(tmp_path, *args, ACCORD_DATABASE_URL=url, ACCORD_DEV_MODE="true")
    assert_names(result, "ACCORD_DATABASE_URL", "'postgres'", "postgresql+psycopg://", lines=1)
    assert result.returncode == 2


@pytest.mark.postgres
def test_database_that_does_not_exist_is_one_line(tmp_path: Path, pg_server_url: str) -> None:
    url = sa.make_url(pg_server_url).set(database="accord_no_such_db", password=PASSWORD)
    result = run(
        tmp_path, "db", "upgrade", ACCORD_DATABASE_URL=url.render_as_string(hide_password=False)
    )
    assert_names(result, "ACCORD_DATABASE_URL", "accord_no_such_db", "does not exist", lines=1)


def test_witness_urls_that_are_not_json_name_the_variable(tmp_path: Path) -> None:
    result = serve(tmp_path, ACCORD_DEV_MODE="true", ACCORD_WITNESS_URLS="http://127.0.0.1:1")
    assert_names(result, "ACCORD_WITNESS_URLS", "JSON", lines=1)
    assert result.returncode == 2


def test_a_malformed_witness_vkey_names_the_variable(tmp_path: Path) -> None:
    result = serve(tmp_path, ACCORD_DEV_MODE="true", ACCORD_WITNESS_VKEYS='["garbage"]')
    assert_names(result, "ACCORD_WITNESS_VKEYS", "malformed verifier key", lines=1)
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("ACCORD_POLICY_ENGINE", "rego", "'embedded' or 'opa'"),
        ("ACCORD_CHECKPOINT_EVERY", "-1", "greater than or equal to 0"),
        ("ACCORD_MAX_BODY_BYTES", "lots", "valid integer"),
    ],
)
def test_validation_messages_name_the_variable(
    tmp_path: Path, variable: str, value: str, reason: str
) -> None:
    result = serve(tmp_path, **{variable: value})
    assert_names(result, f"{variable}: ", reason, lines=1)
    assert result.returncode == 2


def test_a_short_pseudonym_secret_is_named_and_not_shown(tmp_path: Path) -> None:
    result = serve(tmp_path, ACCORD_PSEUDONYM_SECRET=PASSWORD)
    assert_names(result, "ACCORD_PSEUDONYM_SECRET", lines=1)
