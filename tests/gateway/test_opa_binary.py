"""Which ``opa`` binary the policy checks run when none is configured.

Without one, a proposal cannot be checked and so never approved: the demo the
README starts must find the binary the test command built, or one on PATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.services import opa_binary


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_configured_binary_wins(tmp_path: Path) -> None:
    project = _executable(tmp_path / "project" / "opa")
    assert opa_binary(Path("/opt/opa"), project_opa=project) == Path("/opt/opa")


def test_the_projects_own_build_comes_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _executable(tmp_path / "project" / "opa")
    monkeypatch.setenv("PATH", str(_executable(tmp_path / "path" / "opa").parent))
    assert opa_binary(None, project_opa=project) == project


def test_then_one_on_path_then_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_built = tmp_path / "project" / "opa"
    on_path = _executable(tmp_path / "path" / "opa")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert opa_binary(None, project_opa=not_built) == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert opa_binary(None, project_opa=not_built) is None
    not_built.parent.mkdir(parents=True)
    not_built.write_text("")  # there, but not executable
    assert not os.access(not_built, os.X_OK)
    assert opa_binary(None, project_opa=not_built) is None
