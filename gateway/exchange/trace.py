"""What one exchange learned as it went, and the audit entries that describe it.

Every way an exchange ends is appended to the audit log: released, denied by
policy, failed at a step, or refused at authentication. The entry holds codes,
ids, hashes and the subject's pseudonym, never a field value.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.agreements.models import Agreement
from gateway.auth.requests import Caller
from gateway.errors import AccordError
from gateway.exchange.schemas import ExchangeRequest
from gateway.policy.bundle import audit_version
from gateway.policy.engine import Decision, PolicyDenied

__all__ = ["Trace", "exchange_entry", "refusal_entry"]


@dataclass
class Trace:
    """What one exchange learned so far: enough to audit any way it ends."""

    exchange_id: str
    request_sha256: str
    started: float = field(default_factory=time.perf_counter)
    stages: dict[str, float] = field(default_factory=dict)
    caller: Caller | None = None
    request: ExchangeRequest | None = None
    agreement: Agreement | None = None
    decision: Decision | None = None
    #: what the policy judged, and the canonical model's labels of every field (the
    #: release is held to them again after the decision)
    policy_input: Mapping[str, Any] | None = None
    labels: Mapping[str, Any] | None = None
    subject: str | None = None
    state: dict[Hashable, Any] | None = None

    def stage(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + (now - since)
        return now


def exchange_entry(trace: Trace, *, outcome: str, status: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "event": "exchange",
        "exchange_id": trace.exchange_id,
        "outcome": outcome,
        "status": status,
        "request_sha256": trace.request_sha256,
        "latency_ms": round((time.perf_counter() - trace.started) * 1000, 3),
    }
    if trace.caller is not None:
        entry["actor"] = f"{trace.caller.department}/{trace.caller.system}"
        entry["consumer"] = trace.caller.department
    if trace.request is not None:
        entry["dataset"] = trace.request.dataset
        entry["purpose"] = trace.request.purpose
    if trace.agreement is not None:
        entry["agreement"] = f"{trace.agreement.agreement_id}@{trace.agreement.version}"
        entry["provider"] = trace.agreement.provider
    if trace.decision is not None and trace.decision.policy_version:
        entry["policy_version"] = audit_version(trace.decision.policy_version)
    if trace.subject is not None:
        entry["subject"] = trace.subject
    return entry


def refusal_entry(trace: Trace, exc: AccordError) -> dict[str, Any]:
    """The entry for an exchange that ended in ``exc``: auth failure, denial or fault.

    Every 401 is an ``auth_failure``, a replayed token too: its signature verified,
    so the entry names the system the token belongs to (which need not be who sent
    it again); any other is anonymous."""
    if trace.caller is None or exc.status == 401:
        event, outcome = "auth_failure", "refused"
    elif isinstance(exc, PolicyDenied) or (trace.decision is not None and not trace.decision.allow):
        event, outcome = "denial", "denied"
    else:
        event, outcome = "exchange", "failed"
    entry = exchange_entry(trace, outcome=outcome, status=exc.status)
    entry["event"] = event
    entry["problem"] = exc.code
    if trace.decision is not None and not trace.decision.allow:
        entry["decision"] = "deny"
        entry["reasons"] = list(trace.decision.codes)
    if trace.caller is None:
        entry["actor"] = "anonymous"
    return entry
