"""Shared pieces of the workflow suites: a store on a real database, bundles, clocks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
from sqlalchemy.engine import Engine

from audit import AuditLog
from audit.schema import ENTRY_SCHEMA
from gateway.db import make_engine, upgrade
from gateway.policy.bundle import PolicyBundle
from gateway.policy.service import PolicyService
from tests.policies.conftest import POLICY_DIR

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

#: A reviewed change: welfare eligibility checks under agreement agr-2 are suspended.
SUSPEND_RULE = """package accord.exchange

deny_reasons contains reason("purpose_not_permitted", "checks are suspended") if {
\tinput.agreement.id == "agr-2"
\tinput.request.purpose == "benefit_eligibility"
}
"""
SUSPEND_TEST = """package accord.suspend_test

import data.accord.exchange

test_suspended_purpose_denied if {
\tsome r in exchange.deny_reasons with input as {
\t\t"agreement": {"id": "agr-2"},
\t\t"request": {"purpose": "benefit_eligibility"},
\t}
\tr.code == "purpose_not_permitted"
}
"""


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def shipped_sources() -> dict[str, str]:
    return PolicyBundle.from_directory(POLICY_DIR).sources()


def bundle_with(extra: dict[str, str] | None = None, **replace: str) -> PolicyBundle:
    """The shipped bundle plus ``extra`` files, with files replaced by keyword (dots as _)."""
    sources = shipped_sources()
    for key, text in replace.items():
        sources[key.replace("_rego", ".rego")] = text
    sources.update(extra or {})
    return PolicyBundle.from_sources(sources)


def suspend_bundle() -> PolicyBundle:
    return bundle_with({"suspend.rego": SUSPEND_RULE, "suspend_test.rego": SUSPEND_TEST})


@contextmanager
def policy_store(
    db_url: str, opa_bin: Path | None, clock: Clock | None = None
) -> Iterator[tuple[PolicyService, AuditLog, Engine]]:
    engine = make_engine(db_url)
    upgrade(engine)
    audit = AuditLog(engine, node="test-node")
    service = PolicyService(engine, audit=audit, opa_bin=opa_bin, clock=clock or Clock())
    try:
        yield service, audit, engine
    finally:
        audit.close()
        engine.dispose()


def policy_events(audit: AuditLog) -> list[dict[str, Any]]:
    """Every policy_change entry, each checked against the closed audit entry schema."""
    docs = [e.doc() for e in audit.entries(0, 10_000)]
    for doc in docs:
        jsonschema.validate(doc, ENTRY_SCHEMA)
    return [d for d in docs if d["event"] == "policy_change"]


def hexv(version: str) -> str:
    return version.removeprefix("sha256:")


def patched(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for dotted, value in changes.items():
        target = out
        *path, last = dotted.split("__")
        for p in path:
            target = target[p]
        target[last] = value
    return out
