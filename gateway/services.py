"""Builds the gateway's services from settings, once, in the app lifespan or CLI."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine

from audit import AuditLog, NoteSigner, NoteVerifier
from audit.watch import LogWatch
from gateway.agreements.expiry import EXPIRY_INTERVAL_S, ExpiryWatch
from gateway.agreements.service import AgreementService
from gateway.auditing import audit_watch
from gateway.auth.humans import HumanVerifier, dev_issuer_key
from gateway.auth.requests import RequestTokenVerifier
from gateway.classification import ClassificationScheme, default_scheme, load_scheme
from gateway.db import WalCheckpointer, make_engine, upgrade
from gateway.errors import ServiceUnavailableError
from gateway.exchange.bindings import BindingService
from gateway.exchange.counters import ReplayCache
from gateway.exchange.decision_log import DecisionLogWriter
from gateway.exchange.metrics import ExchangeMetrics
from gateway.exchange.pg_steps import PgSteps
from gateway.exchange.service import ExchangeService
from gateway.jose import (
    PrivateKey,
    generate_private_key,
    load_private_key_pem,
    private_key_pem,
)
from gateway.policy.runtime import PolicyRuntime
from gateway.policy.service import PolicyService
from gateway.registry.service import RegistryService
from gateway.settings import Settings
from gateway.statecache import StateCache

__all__ = ["Services", "build_services", "load_or_create_key", "opa_binary"]


def load_or_create_key(path: Path, *, create: bool, alg: str = "EdDSA") -> PrivateKey:
    """Load a PEM private key; create it (mode 0600) only when allowed."""
    if path.exists():
        return load_private_key_pem(path)
    if not create:
        raise ServiceUnavailableError(
            f"key file {path} is missing; run `accord keys init-gateway`", code="missing_key"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_private_key(alg)
    path.touch(mode=0o600)
    path.write_bytes(private_key_pem(key))
    return key


@dataclass
class Services:
    settings: Settings
    engine: Engine
    scheme: ClassificationScheme
    registry: RegistryService
    agreements: AgreementService
    humans: HumanVerifier
    gateway_key: PrivateKey
    log_key: PrivateKey
    audit_log: AuditLog
    policy: PolicyService
    bindings: BindingService
    replay: ReplayCache
    metrics: ExchangeMetrics
    extras: dict[str, Any] = field(default_factory=dict)
    policy_runtime: PolicyRuntime | None = None
    decision_log: DecisionLogWriter | None = None
    _exchange: ExchangeService | None = None
    _checkpointer: WalCheckpointer | None = None
    _pg_steps: PgSteps | None = None
    expiry_interval_s: float = EXPIRY_INTERVAL_S
    _expiry: ExpiryWatch | None = None
    _audit_watch: LogWatch | None = None

    @property
    def exchange(self) -> ExchangeService:
        if self._exchange is None:
            raise ServiceUnavailableError("the exchange service is not started", code="starting")
        return self._exchange

    async def start(self) -> None:
        """Open what needs the event loop: the policy runtime and the exchange flow."""
        if self._exchange is not None:
            return
        self.policy_runtime = await PolicyRuntime.open(self.settings, self.policy)
        self._checkpointer = WalCheckpointer(self.engine)
        self._checkpointer.start()
        if self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg":
            self._pg_steps = PgSteps(self.engine, self.replay)
        self.decision_log = DecisionLogWriter(
            self.engine,
            clock=self.policy.clock,
            retention=timedelta(days=self.settings.decision_log_days),
            pool=self._pg_steps.pool if self._pg_steps is not None else None,
        )
        self._exchange = ExchangeService(
            gateway_id=self.settings.gateway_id,
            registry=self.registry,
            agreements=self.agreements,
            bindings=self.bindings,
            policy=self.policy_runtime,
            decision_log=self.decision_log,
            audit_log=self.audit_log,
            verifier=RequestTokenVerifier(
                self.registry, audience=self.settings.gateway_id, replay=self.replay
            ),
            replay=self.replay,
            state=StateCache(self.engine),
            gateway_key=self.gateway_key,
            pseudonym_secret=self.settings.pseudonym_secret.get_secret_value().encode(),
            metrics=self.metrics,
            fetch_timeout_s=self.settings.fetch_timeout_s,
            pg=self._pg_steps,
            auth_failure_entries_per_s=self.settings.auth_failure_entries_per_s,
        )
        self._expiry = ExpiryWatch(self.agreements, interval_s=self.expiry_interval_s)
        await self._expiry.start()
        self._audit_watch = audit_watch(self.audit_log, self.settings)
        self._audit_watch.start()  # its own thread: verifies new entries, reads the marker

    async def stop(self) -> None:
        if self._audit_watch is not None:
            await asyncio.to_thread(self._audit_watch.stop)
            self._audit_watch = None
        if self._expiry is not None:
            await self._expiry.stop()
            self._expiry = None
        await self.bindings.close()
        if self.decision_log is not None:
            await self.decision_log.aflush()  # what this loop holds, while the pool is open
            await asyncio.to_thread(self.decision_log.close)
            self.decision_log = None
        if self.policy_runtime is not None:
            await self.policy_runtime.close()
            self.policy_runtime = None
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None
        if self._exchange is not None:
            await self._exchange.refusals.record_folded()  # a flood's last, unwritten window
        self._exchange = None
        if self._pg_steps is not None:
            await self._pg_steps.close()
            self._pg_steps = None
        await self.audit_log.aclose_loop()  # last: whatever stopped above may have appended

    def close(self) -> None:
        self.audit_log.close()
        self.engine.dispose()


#: Where the test command builds ``opa`` (``scripts/test``), beside the package.
_PROJECT_OPA = Path(__file__).resolve().parents[1] / ".tools" / "bin" / "opa"


def opa_binary(configured: Path | None, *, project_opa: Path = _PROJECT_OPA) -> Path | None:
    """The ``opa`` binary the policy checks run: ``ACCORD_OPA_BIN`` if set, else the
    one the test command built into the project's ``.tools/bin``, else one on PATH.
    None when there is none: proposals then cannot be checked (503), and nothing
    unchecked can be approved."""
    if configured is not None:
        return configured
    if os.access(project_opa, os.X_OK):
        return project_opa
    found = shutil.which("opa")
    return Path(found) if found else None


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    engine = make_engine(settings.resolved_database_url)
    if migrate:
        upgrade(engine)
    scheme = (
        load_scheme(settings.classification_scheme)
        if settings.classification_scheme
        else default_scheme()
    )
    key_dir = settings.resolved_key_dir
    gateway_key = load_or_create_key(key_dir / "gateway.pem", create=settings.dev_mode)
    log_key = load_or_create_key(key_dir / "log.pem", create=settings.dev_mode)
    audit_log = _build_audit_log(engine, settings, log_key)
    registry = RegistryService(engine, scheme, audit=audit_log)
    agreements = AgreementService(engine, registry, audit=audit_log)
    policy = PolicyService(engine, audit=audit_log, opa_bin=opa_binary(settings.opa_bin))
    humans = HumanVerifier(
        audience=settings.oidc_audience,
        dev_key=dev_issuer_key(key_dir) if settings.dev_mode else None,
        jwks_url=settings.oidc_jwks_url,
        issuer=settings.oidc_issuer,
    )
    return Services(
        settings=settings,
        engine=engine,
        scheme=scheme,
        registry=registry,
        agreements=agreements,
        humans=humans,
        gateway_key=gateway_key,
        log_key=log_key,
        audit_log=audit_log,
        policy=policy,
        bindings=BindingService(engine, audit=audit_log),
        replay=ReplayCache(engine),
        metrics=ExchangeMetrics(),
    )


def _build_audit_log(engine: Engine, settings: Settings, log_key: PrivateKey) -> AuditLog:
    """The audit log on the gateway's database, signing checkpoints with the log key."""
    if not isinstance(log_key, Ed25519PrivateKey):
        raise ServiceUnavailableError(
            "the audit log key must be Ed25519 (C2SP signed notes)", code="missing_key"
        )
    return AuditLog(
        engine,
        node=settings.node_id,
        signer=NoteSigner(settings.audit_origin, log_key),
        max_batch=settings.audit_max_batch,
        max_wait_ms=settings.audit_max_wait_ms,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_interval_s=settings.checkpoint_interval_s,
        witnesses=[NoteVerifier.from_vkey(v) for v in settings.witness_vkeys],
        witness_urls=settings.witness_urls,
        # What the log key signed last, beside the key, never in the store (docs/audit.md).
        signer_state=settings.resolved_key_dir / "log.pem.signed",
    )
