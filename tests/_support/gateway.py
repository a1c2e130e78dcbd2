"""Run a real gateway for end-to-end tests: seeded store, uvicorn subprocess, clients.

``running_gateway`` seeds the demo departments, agreements and bindings into the
given database (SQLite or PostgreSQL), starts ``accord serve`` on a free loopback
port with the sample departments' endpoints in its environment, and stops it
afterwards. Tests then speak HTTP to it, exactly as a department system would.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from audit import AuditLog, engine_for
from gateway.api.app import create_app
from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.client import AccordClient
from gateway.jose import PrivateKey, load_private_key_pem
from gateway.services import Services, build_services
from gateway.settings import Settings
from tests._support.servers import ROOT, free_port, wait_http

__all__ = [
    "Gateway",
    "add_agreement",
    "audit_docs",
    "exchange_entry",
    "running_gateway",
    "seeded_services",
    "sqlite_gateway",
]

SYSTEMS = {
    "civil-registry": "population-api",
    "health-insurer": "claims-db",
    "tax-authority": "tax-status-service",
    "welfare-office": "benefits-app",
    "citizen-portal": "portal",
}


@dataclass
class Gateway:
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    clients: list[AccordClient] = field(default_factory=list)

    def key(self, department: str) -> PrivateKey:
        return load_private_key_pem(self.data_dir / "demo-keys" / f"{department}.pem")

    def client(self, department: str, system: str | None = None) -> AccordClient:
        c = AccordClient(
            self.url,
            department=department,
            system=system or SYSTEMS[department],
            key=self.key(department),
        )
        self.clients.append(c)
        return c

    def audit_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``accord audit ARGS --log-key <the gateway's log key>``, as an auditor runs it."""
        return subprocess.run(
            [sys.executable, "-m", "audit.cli", *args, "--log-key", str(self.log_key)],
            cwd=self.data_dir,
            env={**self.env},
            capture_output=True,
            text=True,
        )

    def staff(self, role: str = "admin") -> dict[str, str]:
        """The ``Authorization`` header of a person ``test-<role>`` the dev issuer vouches for."""
        key = dev_issuer_key(self.data_dir / "keys")
        token = issue_dev_token(key, subject=f"test-{role}", roles=[role], audience="accord")
        return {"Authorization": f"Bearer {token}"}

    @property
    def log_key(self) -> Path:
        return self.data_dir / "keys" / "log.pem"

    def settings(self) -> Settings:
        return Settings(
            dev_mode=True,
            data_dir=self.data_dir,
            database_url=self.env["ACCORD_DATABASE_URL"],
        )


def audit_docs(db_url: str, since: int = 0) -> list[dict[str, Any]]:
    """The audit log's entries from ``since`` to its head, read from the store itself."""
    engine = engine_for(db_url)
    log = AuditLog(engine)
    try:
        return [e.doc() for e in log.entries(since, log.head().size)]
    finally:
        log.close()
        engine.dispose()


def exchange_entry(db_url: str, exchange_id: str) -> dict[str, Any]:
    """The audit entry of ``exchange_id``; there must be exactly one."""
    found = [d for d in audit_docs(db_url) if d.get("exchange_id") == exchange_id]
    assert len(found) == 1, found
    return found[0]


def add_agreement(services: Services, doc: dict[str, Any]) -> None:
    """Sign ``doc`` with the demo keys of both parties and submit it."""
    from gateway.agreements.signing import sign_agreement
    from gateway.agreements.terms import AgreementTerms

    keys = services.settings.data_dir / "demo-keys"
    terms = AgreementTerms.from_json(doc)
    signed = sign_agreement(
        {"payload": "", "signatures": []},
        load_private_key_pem(keys / f"{terms.provider}.pem"),
        party="provider",
        terms=terms,
    )
    signed = sign_agreement(
        signed, load_private_key_pem(keys / f"{terms.consumer}.pem"), party="consumer"
    )
    services.agreements.submit(signed.to_json(), actor="test")


def seeded_services(db_url: str, data_dir: Path) -> Services:
    from gateway.demo import seed

    services = build_services(Settings(dev_mode=True, database_url=db_url, data_dir=data_dir))
    seed(services)
    return services


def start_gateway(
    env: Mapping[str, str], data_dir: Path, *, workers: int = 1
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    log = (data_dir / f"gateway-{port}.log").open("wb")
    serve = ["serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", *serve],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=60)
    except RuntimeError:
        proc.kill()
        raise RuntimeError((data_dir / f"gateway-{port}.log").read_text()[-3000:]) from None
    return url, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def running_gateway(
    *,
    db_url: str,
    data_dir: Path,
    departments_env: Mapping[str, str],
    opa_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    prepare: Any = None,
    workers: int = 1,
) -> Iterator[Gateway]:
    """Seed ``db_url``, run ``prepare(services)`` if given, then serve it over HTTP."""
    services = seeded_services(db_url, data_dir)
    try:
        if prepare is not None:
            prepare(services)
    finally:
        services.close()
        services.engine.dispose()
    env = {
        "ACCORD_DEV_MODE": "true",
        "ACCORD_DATA_DIR": str(data_dir),
        "ACCORD_DATABASE_URL": db_url,
        "ACCORD_POLICY_ENGINE": "opa" if opa_url else "embedded",
        "ACCORD_CHECKPOINT_INTERVAL_S": "0.5",
        "PYTHONPATH": str(ROOT),
        **departments_env,
        **(extra_env or {}),
    }
    if opa_url:
        env["ACCORD_OPA_URL"] = opa_url
    url, proc = start_gateway(env, data_dir, workers=workers)
    gw = Gateway(url=url, data_dir=data_dir, env=env, process=proc)
    try:
        yield gw
    finally:
        for c in gw.clients:
            c.close()
        stop(proc)
        if gw.process is not proc:  # a test restarted it
            stop(gw.process)


@contextlib.contextmanager
def sqlite_gateway(
    data_dir: Path, departments_env: Mapping[str, str] | None = None, **options: Any
) -> Iterator[Gateway]:
    """The zero-setup default, running: SQLite in ``data_dir`` and the embedded policy
    engine; without ``departments_env`` no department system is reachable from it."""
    with running_gateway(
        db_url=f"sqlite:///{data_dir / 'accord.db'}",
        data_dir=data_dir,
        departments_env=departments_env or {},
        **options,
    ) as gw:
        yield gw


@contextlib.contextmanager
def serving_in_thread(services: Services) -> Iterator[str]:
    """``services``'s app under uvicorn on a free loopback port in this process (a
    thread), for tests that drive the real CLI against it; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services=services), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):  # bounded: up to 30 s for startup
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
