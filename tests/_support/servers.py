"""Start and stop the real servers the tests talk to (PostgreSQL, OPA).

The test command (``scripts/test``) starts one PostgreSQL cluster and exports
``ACCORD_TEST_PG_URL``; when pytest runs on its own, ``PostgresCluster`` starts
an ephemeral cluster itself so a developer's ``pytest`` works the same way.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up: {last}")


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed; run scripts/test, which installs it")
    return Path(found[-1])


def _as_pg(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PostgresCluster:
    """An ephemeral cluster used only when the test command did not start one."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="accord-pg-"))
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, user="postgres")
        bindir = _pg_bin()
        subprocess.run(
            _as_pg(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.dir / "data"),
                    "-U",
                    "accord",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            _as_pg(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "-w",
                    "-l",
                    str(self.dir / "log"),
                    "-o",
                    f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                    "-c max_connections=200",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.bindir = bindir
        self.url = f"postgresql+psycopg://accord@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            _as_pg(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "-m",
                    "immediate",
                    "stop",
                ]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base = server_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


def allow_connections(server_url: str, db_url: str, allow: bool) -> None:
    """Let ``db_url``'s database take connections again, or refuse new ones and end
    every open one: the store going away under a running gateway."""
    name = sa.make_url(db_url).database
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
    admin.dispose()


def opa_binary() -> Path:
    env = os.environ.get("ACCORD_OPA_BIN")
    path = Path(env) if env else ROOT / ".tools" / "bin" / "opa"
    if not path.exists():
        raise RuntimeError(f"opa binary not found at {path}; run scripts/test, which builds it")
    return path


@contextlib.contextmanager
def opa_server() -> Iterator[str]:
    """A real ``opa run --server`` on a free loopback port; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(opa_binary()),
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{port}",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
