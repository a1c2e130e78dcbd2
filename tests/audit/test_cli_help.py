"""``accord audit`` says what each witness-key option takes, and in what format."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from audit.cli import audit_app


def _help(command: str) -> str:
    result = CliRunner().invoke(audit_app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.output


def _option_help(command: str, option: str) -> str:
    line = next(x for x in _help(command).splitlines() if f"{option} " in x)
    return re.sub(r"\s+", " ", line.split(option, 1)[1].strip(" │"))


@pytest.mark.parametrize("command", ["checkpoint", "export"])
def test_witness_vkey_help_says_what_it_is_and_its_format(command: str) -> None:
    text = _option_help(command, "--witness-vkey")
    assert "verifier key of a witness" in text
    assert "name+keyid+base64" in text and "repeatable" in text
