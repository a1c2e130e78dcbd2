"""The README's run command serves the API with the demo departments."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import httpx

from tests._support.servers import ROOT, free_port, wait_http


def _run_command(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """The README's run command on ``port``, its data under ``tmp_path/data``, in a
    session of its own."""
    env = {**os.environ, "ACCORD_DATA_DIR": str(tmp_path / "data")}
    env.pop("ACCORD_DATABASE_URL", None)
    return subprocess.Popen(
        [str(ROOT / "scripts" / "run"), "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_run_command_serves_health_and_demo_departments(tmp_path: Path) -> None:
    port = free_port()
    proc = _run_command(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["status"] == "ok"
        depts = {d["id"] for d in httpx.get(f"http://127.0.0.1:{port}/v1/departments").json()}
        assert {"civil-registry", "health-insurer", "tax-authority", "welfare-office"} <= depts
        docs = httpx.get(f"http://127.0.0.1:{port}/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert (tmp_path / "data" / "accord.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _processes_using(path: Path) -> list[int]:
    """Pids of the processes whose command line names ``path`` (the sample systems)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(int(entry.name))
    return found


def test_stopping_the_demo_stops_its_department_systems(tmp_path: Path) -> None:
    """SIGTERM to the demo alone (as a service manager sends it), not to its group."""
    port = free_port()
    data = tmp_path / "data"
    proc = _run_command(tmp_path, port)  # the script execs `accord demo`: same pid
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        systems = [p for p in _processes_using(data / "departments") if p != proc.pid]
        assert systems, "the demo runs its sample department systems"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        left = [p for p in systems if Path(f"/proc/{p}").exists()]
        assert left == []
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
