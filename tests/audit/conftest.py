"""Audit fixtures: fixed log and witness keys, entry factories, logs on real databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog, Cosigner, NoteSigner, engine_for

ORIGIN = "accord.test/audit"
LOG_SEED = bytes(range(32))
WITNESS_SEED = bytes(range(32, 64))


def log_signer() -> NoteSigner:
    return NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(LOG_SEED))


def witness_cosigner(name: str = "witness.test/w1", seed: bytes = WITNESS_SEED) -> Cosigner:
    return Cosigner(name, Ed25519PrivateKey.from_private_bytes(seed))


def entry(i: int) -> dict[str, Any]:
    """A schema-valid entry of a kind chosen by ``i`` (never a field value)."""
    kinds = i % 3
    if kinds == 0:
        return {
            "event": "exchange",
            "exchange_id": f"ex-{i // 2}",
            "actor": "welfare-office/case-system",
            "consumer": "welfare-office",
            "provider": "civil-registry",
            "agreement": "person-lookup@3",
            "dataset": "person",
            "purpose": "benefit-eligibility",
            "fields": ["given_name", "birth_date"],
            "operations": {"birth_date": "generalise"},
            "decision": "allow",
            "request_sha256": f"{i:064x}",
            "response_sha256": f"{i * 7:064x}",
            "subject": f"pseudonym-{i:08d}-abcdef",
            "outcome": "released",
            "status": 200,
            "latency_ms": 12.5,
        }
    if kinds == 1:
        return {
            "event": "denial",
            "exchange_id": f"ex-{i // 2}",
            "actor": "tax-office/batch",
            "decision": "deny",
            "reasons": ["purpose_not_allowed"],
            "outcome": "denied",
            "status": 403,
        }
    return {
        "event": "agreement_change",
        "actor": "user:alice",
        "outcome": "activated",
        "detail": {"agreement_id": "person-lookup", "version": i, "note": "ünïcode ✓"},
    }


LogFactory = Callable[..., AuditLog]


def stored_rows(log: AuditLog) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the tables a batch writes, in key order: to compare two logs."""
    with log.engine.connect() as conn:
        return {
            t: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1, 2")]
            for t in ("audit_entries", "audit_nodes", "audit_head")
        }


@pytest.fixture
def make_log() -> Iterator[LogFactory]:
    """Build ``AuditLog`` objects on a URL with the fixed log key; closes them afterwards."""
    made: list[AuditLog] = []

    def make(url: str, **kwargs: Any) -> AuditLog:
        kwargs.setdefault("signer", log_signer())
        kwargs.setdefault("checkpoint_every", 0)
        kwargs.setdefault("checkpoint_interval_s", 0)
        log = AuditLog(engine_for(url), **kwargs)
        log.create_schema()
        made.append(log)
        return log

    yield make
    for log in made:
        log.close()
        log.engine.dispose()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One honest 40-entry log with witnessed checkpoints and its export (tamper suites)."""
    from tests.audit.tamper_support import build_base

    return build_base(tmp_path_factory)
