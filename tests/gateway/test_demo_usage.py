"""The Python example `accord demo` prints runs as printed, with the interpreter it names.

The demo runs as an operator starts it (the installed ``accord demo`` on a
free loopback port); the example is taken from what it printed and run against
it both ways the output offers: the file it wrote, and the lines pasted into an
interactive interpreter.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli.demo_usage import EXAMPLE_FILE, python_example
from gateway.settings import Settings
from tests._support.servers import free_port, wait_http

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Demo:
    url: str
    data_dir: Path
    printed: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("demo")
    data = root / "data"
    port = free_port()
    env = {**os.environ, "ACCORD_DATA_DIR": str(data), "ACCORD_DEV_MODE": "true"}
    env.pop("ACCORD_DATABASE_URL", None)
    out = root / "stdout.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [str(VENV_BIN / "accord"), "demo", "--port", str(port)],
            env=env,
            cwd=root,
            stdout=sink,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", timeout=120)  # the demo prints its examples first
        yield Demo(url=url, data_dir=data, printed=out.read_text("utf-8"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _pasted_lines(printed: str) -> str:
    """What the output offers to paste: from after "paste these lines:" to "curl"."""
    after = printed.split("paste these lines:\n", 1)[1]
    return after.split("\ncurl\n", 1)[0].strip("\n") + "\n"


def _run_line(printed: str) -> list[str]:
    """The printed command that runs the example file."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Run the example"))
    return shlex.split(next(line for line in lines[start + 1 :] if line.strip()))


def _assert_answered(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr
    assert "'family_name':" in result.stdout  # a released record
    assert "'agreement': 'welfare-person-lookup@1'" in result.stdout  # its verified receipt


def test_printed_example_is_the_example_flush_left(demo: Demo) -> None:
    settings = Settings(dev_mode=True, data_dir=demo.data_dir)
    code = python_example(settings, demo.url)
    assert _pasted_lines(demo.printed) == code
    assert not code.startswith(" ")


def test_printed_command_runs_the_written_example(demo: Demo, tmp_path: Path) -> None:
    argv = _run_line(demo.printed)
    assert argv == [sys.executable, str((demo.data_dir / EXAMPLE_FILE).resolve())]
    assert Path(argv[0]).parent == VENV_BIN  # the project's interpreter, not the system's
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    _assert_answered(result)


def test_printed_lines_run_pasted_into_the_interpreter(demo: Demo, tmp_path: Path) -> None:
    """``-i`` reads stdin as the REPL reads a paste: an indented first line fails there."""
    result = subprocess.run(
        [sys.executable, "-i"],
        input=_pasted_lines(demo.printed),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    _assert_answered(result)


def test_printed_lines_run_as_a_file(demo: Demo, tmp_path: Path) -> None:
    pasted = tmp_path / "pasted.py"
    pasted.write_text(_pasted_lines(demo.printed), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(pasted)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    _assert_answered(result)
