"""Builds the gateway's services from settings, once, in the app lifespan or CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine

from audit import AuditLog, NoteSigner, NoteVerifier
from gateway.agreements.service import AgreementService
from gateway.auth.humans import HumanVerifier, dev_issuer_key
from gateway.classification import ClassificationScheme, default_scheme, load_scheme
from gateway.db import make_engine, upgrade
from gateway.errors import ServiceUnavailableError
from gateway.jose import (
    PrivateKey,
    generate_private_key,
    load_private_key_pem,
    private_key_pem,
)
from gateway.registry.service import RegistryService
from gateway.settings import Settings

__all__ = ["Services", "build_services", "load_or_create_key"]


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
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.audit_log.close()
        self.engine.dispose()


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
    )
