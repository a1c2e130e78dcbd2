"""The demo's banner says whether policy proposals can be checked, and how to make them so.

On a machine without ``opa`` the demo started by the README's run command left
every proposal ``draft`` with no hint why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.demo_usage import OPA_INSTALL, usage_examples
from gateway.settings import Settings


def _banner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opa_bin: Path | None) -> str:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("gateway.cli.demo_usage.PROJECT_OPA", tmp_path / "not-built" / "opa")
    settings = Settings(dev_mode=True, data_dir=tmp_path / "data", opa_bin=opa_bin)
    return usage_examples(settings, "http://127.0.0.1:8080", tmp_path / "example.py")


def test_banner_warns_without_opa_and_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _banner(tmp_path, monkeypatch, None)
    assert "policy proposals cannot be checked" in text
    assert "stays `draft`" in text
    assert OPA_INSTALL in text and "opa@v1.22.3" in OPA_INSTALL


def test_banner_names_a_configured_opa_that_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _banner(tmp_path, monkeypatch, tmp_path / "nowhere" / "opa")
    assert f"ACCORD_OPA_BIN={tmp_path / 'nowhere' / 'opa'} is not an executable file" in text


def test_banner_names_the_opa_it_checks_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opa = tmp_path / "bin" / "opa"
    opa.parent.mkdir()
    opa.write_text("#!/bin/sh\nexit 0\n")
    opa.chmod(0o755)
    text = _banner(tmp_path, monkeypatch, opa)
    assert f"Policy proposals are checked with {opa}." in text
    assert "cannot be checked" not in text
