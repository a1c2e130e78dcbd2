"""Gateway configuration, read from ``ACCORD_*`` environment variables.

Settings are built by the app factory (``Settings()``), never at import time,
so tests construct their own and no global has to be patched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEV_SECRET", "Settings"]

#: The well-known secret dev mode falls back to. Refused outside dev mode.
DEV_SECRET = "accord-dev-secret-do-not-use-in-production"  # noqa: S105 - refused outside dev


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCORD_", extra="ignore")

    dev_mode: bool = False
    gateway_id: str = "accord-gateway"
    data_dir: Path = Path(".accord-data")
    #: SQLAlchemy URL; empty means SQLite in ``data_dir``.
    database_url: str = ""
    #: Directory holding the gateway's own private keys (receipt and log keys).
    key_dir: Path | None = None
    policy_engine: Literal["embedded", "opa"] = "embedded"
    #: The shipped Rego bundle; it becomes the first active policy version on an empty store.
    policy_dir: Path = Path(__file__).resolve().parents[1] / "policies"
    opa_url: str = "http://127.0.0.1:8181"
    #: The ``opa`` binary used to check proposed policies (``opa check``/``opa test``).
    opa_bin: Path | None = None
    policy_timeout_ms: int = Field(default=500, gt=0)
    #: Decide on regorus' compiled VM when a version passes the VM self-check (else the
    #: interpreter); false always interprets. See gateway/policy/embedded.py.
    embedded_vm: bool = True
    #: Where the embedded engine evaluates: ``process`` (evaluator processes, killed at
    #: the policy timeout and limited in memory) or ``inline`` (in the gateway's own
    #: process: faster, but a slow evaluation stalls every request). See
    #: gateway/policy/sandbox.py.
    policy_isolation: Literal["process", "inline"] = "process"
    #: Evaluator processes per gateway process (each decision goes to the least busy one).
    policy_evaluators: int = Field(default=2, ge=1, le=64)
    #: Address-space limit of each evaluator process in MiB (0: none).
    policy_evaluator_memory_mib: int = Field(default=2048, ge=0)
    #: Root secret for per-agreement pseudonymisation keys (HKDF input).
    pseudonym_secret: SecretStr = SecretStr("")
    #: Human users: an OIDC issuer's JWKS URL; in dev mode a local issuer key is used.
    oidc_jwks_url: str = ""
    oidc_issuer: str = ""
    oidc_audience: str = "accord"
    classification_scheme: Path | None = None
    log_json: bool | None = None
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    #: A request body must arrive whole within this long (else 408 and the connection
    #: is closed): a client trickling its body cannot hold a connection open.
    body_timeout_s: float = Field(default=20.0, gt=0)
    #: Open connections (or requests in progress) per process beyond which the server
    #: answers new requests 503 without running them (uvicorn ``limit_concurrency``);
    #: 0: no cap.
    max_connections: int = Field(default=1000, ge=0)
    #: When set, ``/metrics`` answers only ``Authorization: Bearer <this>``.
    metrics_token: SecretStr = SecretStr("")
    #: How long decision inputs are kept for the officers' impact dry-run.
    decision_log_days: int = Field(default=90, ge=1)
    #: Failed authentications a second recorded as audit entries of their own; beyond
    #: that a flood's failures are counted into one entry a second (0: every one alone).
    auth_failure_entries_per_s: int = Field(default=50, ge=0)
    #: Budget for one call to a provider's system (the connector's own limits also apply).
    fetch_timeout_s: float = Field(default=10.0, gt=0)
    #: This node's name in audit entries (several nodes share one chain).
    node_id: str = Field(default="gw-1", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    #: Checkpoint origin line (C2SP tlog-checkpoint); a schemaless URL-like log name.
    audit_origin: str = "accord.local/audit"
    #: Sign a checkpoint every N entries or T seconds, whichever comes first.
    checkpoint_every: int = Field(default=1000, ge=0)
    checkpoint_interval_s: float = Field(default=60.0, ge=0)
    #: How often each node verifies, in the background, the audit entries appended
    #: since its last look (``audit.watch.LogWatch``) and stops every node on damage;
    #: 0: never (a status refresh or ``accord audit verify`` still verifies everything).
    audit_verify_interval_s: float = Field(default=60.0, ge=0)
    #: Group commit: collect up to this many entries or wait this long per batch.
    audit_max_batch: int = Field(default=256, gt=0)
    audit_max_wait_ms: float = Field(default=2.0, ge=0)
    #: Witnesses (c2sp.org/tlog-witness URLs) and their verifier keys (vkeys).
    witness_urls: list[str] = Field(default_factory=list)
    witness_vkeys: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        if self.dev_mode:
            if not self.pseudonym_secret.get_secret_value():
                self.pseudonym_secret = SecretStr(DEV_SECRET)
            return self
        secret = self.pseudonym_secret.get_secret_value()
        if not secret or secret == DEV_SECRET or len(secret) < 32:
            raise ValueError(
                "ACCORD_PSEUDONYM_SECRET must be set to at least 32 random characters "
                "outside dev mode (ACCORD_DEV_MODE=true uses a fixed development secret)"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'accord.db').resolve()}"

    @property
    def resolved_key_dir(self) -> Path:
        return self.key_dir if self.key_dir is not None else self.data_dir / "keys"

    @property
    def json_logs(self) -> bool:
        return (not self.dev_mode) if self.log_json is None else self.log_json
