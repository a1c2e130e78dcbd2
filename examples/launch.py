"""Start the sample departments as subprocesses on free loopback ports.

Tests, benchmarks and ``accord demo`` all use ``launch()``: it runs
``python -m examples.serve`` for each department, waits until each answers,
and hands back the URLs plus ready-to-build connector configs, so nobody has
to hard-code ports. Processes are terminated (then killed) on exit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from examples.serve import NAMES

__all__ = ["EXAMPLES", "Departments", "free_port", "launch", "mapping_path"]

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
TOKEN = "civil-demo-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mapping_path(department: str, entity: str) -> Path:
    return EXAMPLES / department / f"{entity}.mapping.yaml"


@dataclass
class Departments:
    """What ``launch()`` started: endpoints and the env the configs expand."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def config(self, name: str) -> dict[str, Any]:
        """The department's connector config with its placeholders filled in."""
        from connectors.config import load_config

        return load_config(EXAMPLES / name / "connector.yaml", env=self.env)

    def url(self, name: str) -> str:
        key = {
            "civil_registry": "CIVIL_REGISTRY_URL",
            "tax_authority": "TAX_AUTHORITY_URL",
            "health_insurer": "HEALTH_INSURER_DB_URL",
            "welfare_office": "WELFARE_OFFICE_DROP_DIR",
        }
        return self.env[key[name]]


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: department exited with {proc.returncode}")
        try:
            if (
                httpx.get(
                    url, timeout=1.0, headers={"Authorization": f"Bearer {TOKEN}"}
                ).status_code
                < 500
            ):
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def _serve(name: str, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "examples.serve", name, "--data-dir", str(data_dir), *extra]


@contextlib.contextmanager
def launch(
    names: Sequence[str] = NAMES,
    data_dir: Path | None = None,
    *,
    health_db_url: str | None = None,
) -> Iterator[Departments]:
    """Start ``names``; yields a ``Departments`` and stops everything afterwards."""
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="accord-examples-")
        data_dir = Path(tmp.name)
    deps = Departments(data_dir=data_dir)
    deps.env["CIVIL_REGISTRY_TOKEN"] = TOKEN
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for name in names:
            if name in ("civil_registry", "tax_authority"):
                port = free_port()
                proc = subprocess.Popen(
                    _serve(name, data_dir, "--port", str(port)),
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
                deps.processes[name] = proc
                base = f"http://127.0.0.1:{port}"
                _wait(base + "/healthz", proc)
                deps.env[
                    "CIVIL_REGISTRY_URL" if name == "civil_registry" else "TAX_AUTHORITY_URL"
                ] = base
            else:
                extra = (
                    ["--db-url", health_db_url]
                    if (name == "health_insurer" and health_db_url)
                    else []
                )
                out = subprocess.run(
                    _serve(name, data_dir, *extra),
                    cwd=ROOT,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                deps.env[
                    "HEALTH_INSURER_DB_URL"
                    if name == "health_insurer"
                    else "WELFARE_OFFICE_DROP_DIR"
                ] = out.splitlines()[-1]
        yield deps
    finally:
        for proc in deps.processes.values():
            proc.terminate()
        for proc in deps.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            tmp.cleanup()
