"""The `accord` CLI refuses bad input with one readable line, never a traceback.

Each case runs the installed console script, as an operator would: the
traceback the acceptance review saw came from the real entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from gateway.auth.requests import MAX_LIFETIME_S

ACCORD = str(Path(sys.executable).parent / "accord")

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def accord(tmp_path: Path) -> Run:
    env = {
        **os.environ,
        "ACCORD_DEV_MODE": "true",
        "ACCORD_DATA_DIR": str(tmp_path / "data"),
        "ACCORD_DATABASE_URL": f"sqlite:///{tmp_path / 'accord.db'}",
        "COLUMNS": "80",  # the width at which a long error used to wrap
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ACCORD, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    return run


@pytest.fixture
def key(tmp_path: Path, accord: Run) -> str:
    path = tmp_path / "k.pem"
    assert accord("keys", "generate", "--out", str(path)).returncode == 0
    return str(path)


def _request(accord: Run, key: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return accord(
        "token", "request", "--department", "welfare-office", "--system", "benefits-app",
        "--key", key, *extra,
    )  # fmt: skip


@pytest.mark.parametrize("ttl", ["400", "0", "-5", "100000", str(MAX_LIFETIME_S + 1)])
def test_token_request_refuses_a_lifetime_the_gateway_refuses(
    accord: Run, key: str, ttl: str
) -> None:
    result = _request(accord, key, f"--ttl={ttl}")
    assert result.returncode != 0
    assert result.stdout == ""  # no token to paste
    assert "--ttl" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("ttl", [1, MAX_LIFETIME_S])
def test_token_request_signs_a_lifetime_within_the_limit(accord: Run, key: str, ttl: int) -> None:
    result = _request(accord, key, "--ttl", str(ttl))
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == ttl


def test_token_request_help_states_the_gateway_limit(accord: Run) -> None:
    result = accord("token", "request", "--help")
    assert result.returncode == 0
    assert f"1<=x<={MAX_LIFETIME_S}" in result.stdout


def test_token_issue_names_an_unknown_role_in_one_line(accord: Run) -> None:
    result = accord("token", "issue", "--role", "nobody")
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error unknown_role: unknown roles nobody (known: admin, auditor, department, officer)"
    ]


def test_token_issue_refuses_a_lifetime_below_one_second(accord: Run) -> None:
    result = accord("token", "issue", "--role", "officer", "--ttl", "-5")
    assert result.returncode != 0 and result.stdout == ""


def _one_line_error(result: subprocess.CompletedProcess[str], path: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error") and path in lines[0]


@pytest.fixture
def missing(tmp_path: Path) -> str:
    """A path in no directory, long enough that an 80-column console would wrap it."""
    return str(tmp_path / "absent" / ("a-file-that-is-not-there-" * 3 + ".json"))


def test_token_request_missing_body_file(accord: Run, key: str, missing: str) -> None:
    _one_line_error(_request(accord, key, "--body", missing), missing)


def test_token_request_body_that_is_a_directory(accord: Run, key: str, tmp_path: Path) -> None:
    _one_line_error(_request(accord, key, "--body", str(tmp_path)), str(tmp_path))


def test_token_request_missing_key_file(accord: Run, missing: str) -> None:
    result = _request(accord, missing)
    _one_line_error(result, missing)
    assert result.stderr.count(missing) == 1  # named once, not again by the OS's message


@pytest.mark.parametrize(
    "command",
    [
        "agreement init a --provider p --consumer c --out {missing}",
        "agreement sign {missing} --key {key} --party provider",
        "agreement sign {terms} --key {missing} --party provider",
        "agreement sign {terms} --key {key} --party provider --out {missing}",
        "agreement verify {missing}",
        "agreement verify {terms} --jwk {missing}",
        "agreement submit {missing}",
        "dept add-key welfare-office {missing}",
        "keys public {missing}",
        "policy propose {missing}",
    ],
)
def test_file_options_report_a_missing_path_in_one_line(
    accord: Run, key: str, missing: str, tmp_path: Path, command: str
) -> None:
    terms = tmp_path / "a.json"
    if "{terms}" in command:
        init = accord(
            "agreement", "init", "a", "--provider", "p", "--consumer", "c", "-o", str(terms)
        )
        assert init.returncode == 0, init.stderr
    args = command.format(key=key, terms=terms, missing=missing).split()
    _one_line_error(accord(*args), missing)


def test_keys_generate_under_a_file(accord: Run, key: str) -> None:
    """``--out`` makes missing directories; a file in the way is an error, not a traceback."""
    _one_line_error(accord("keys", "generate", "--out", f"{key}/k.pem"), key)
