"""The exchange flow: authenticate, resolve, decide, fetch, translate, release, audit, answer.

``ExchangeService.run`` is the one place the steps of ARCHITECTURE.md happen, in
that order. Every way out is either an ``ExchangeAnswer`` (data released, audit
entry durable, receipt signed) or an ``AccordError`` whose code says which step
refused; every refusal after authentication is itself appended to the audit log
before the caller hears of it. Nothing is released unless the audit append
returned: if the log cannot take the entry, the caller gets 503 and no data.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from audit import AuditError, AuditLog
from audit.canonical import canonical_bytes
from connectors import ConnectorError, FetchContext
from gateway.agreements.service import AgreementService
from gateway.agreements.terms import AgreementTerms
from gateway.auth.requests import RequestTokenVerifier
from gateway.errors import (
    AccordError,
    ServiceUnavailableError,
    ValidationFailed,
)
from gateway.exchange.admission import Admission
from gateway.exchange.bindings import BindingService, ResolvedBinding
from gateway.exchange.counters import QuotaReservation, ReplayCache
from gateway.exchange.decision_log import DecisionLogWriter
from gateway.exchange.fetch_step import (
    connector_fault,
    fetch_records,
    verify_record_subject,
    wanted_targets,
)
from gateway.exchange.metrics import ExchangeMetrics
from gateway.exchange.pg_steps import PgSteps
from gateway.exchange.reads import SystemReads
from gateway.exchange.receipts import receipt_claims, sign_receipt
from gateway.exchange.refusals import RefusalRecorder
from gateway.exchange.release_step import (
    released_result,
    verify_within_agreement,
    verify_within_classification,
)
from gateway.exchange.request_step import aggregate_spec, labels_for, requested_fields
from gateway.exchange.subjects import SubjectPseudonyms
from gateway.exchange.trace import Trace, exchange_entry, refusal_entry
from gateway.jose import PrivateKey, public_jwk
from gateway.policy.engine import Decision
from gateway.policy.input import build_policy_input
from gateway.policy.runtime import PolicyRuntime
from gateway.registry.models import Department
from gateway.registry.service import RegistryService
from gateway.release import verify_predicate_allowed
from gateway.release_obligations import ExceedsAgreement
from gateway.statecache import StateCache

__all__ = ["ExchangeAnswer", "ExchangeService"]

log = structlog.get_logger(__name__)


@dataclass
class ExchangeAnswer:
    body: dict[str, Any]
    exchange_id: str


class ExchangeService(SystemReads):
    def __init__(
        self,
        *,
        gateway_id: str,
        registry: RegistryService,
        agreements: AgreementService,
        bindings: BindingService,
        policy: PolicyRuntime,
        decision_log: DecisionLogWriter | None,
        audit_log: AuditLog,
        verifier: RequestTokenVerifier,
        replay: ReplayCache,
        state: StateCache,
        gateway_key: PrivateKey,
        pseudonym_secret: bytes,
        metrics: ExchangeMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fetch_timeout_s: float = 10.0,
        max_aggregate_records: int = 100_000,
        pg: PgSteps | None = None,
        auth_failure_entries_per_s: int = 0,
    ) -> None:
        self.gateway_id = gateway_id
        self.registry = registry
        self.agreements = agreements
        self.bindings = bindings
        self.policy = policy
        self.decision_log = decision_log
        self.audit_log = audit_log
        self.verifier = verifier
        self.replay = replay
        self.state = state
        self.gateway_key = gateway_key
        self._receipt_jwk = public_jwk(gateway_key)  # its thumbprint: once, not per receipt
        self.pseudonym_secret = pseudonym_secret
        self.subjects = SubjectPseudonyms(pseudonym_secret)
        self.metrics = metrics
        self.clock = clock
        self.fetch_timeout_s = fetch_timeout_s
        self.max_aggregate_records = max_aggregate_records
        # Failed authentications beyond this many a second are recorded folded.
        self.refusals = RefusalRecorder(
            audit_log, metrics, clock, auth_failure_entries_per_s=auth_failure_entries_per_s
        )
        self.admission = Admission(
            verifier=verifier,
            agreements=agreements,
            registry=registry,
            replay=replay,
            state=state,
            pg=pg,
        )

    # -- the flow ---------------------------------------------------------------

    async def run(
        self, *, token: str | None, method: str, path: str, body: bytes
    ) -> ExchangeAnswer:
        trace = Trace(uuid.uuid4().hex, hashlib.sha256(body).hexdigest())
        structlog.contextvars.bind_contextvars(exchange_id=trace.exchange_id)
        now = self.clock()
        reservation: QuotaReservation | None = None
        fetched: Sequence[Mapping[str, Any]] | None = None
        try:
            department, reservation, t = await self.admission.admit(
                trace, token, method, path, body, now
            )
            assert trace.request is not None  # set by _admit
            decision = await self._decide(trace, department, reservation, now)
            trace.decision = decision
            t = trace.stage("decide", t)
            decision.verify_allowed()
            self._verify_within_agreement(trace, decision, now)
            binding = await self.bindings.resolve(
                trace.agreement.provider if trace.agreement else "",
                trace.request.dataset,
                state=trace.state,
            )
            fetched = await self._fetch(trace, binding, decision)
            result, released = await self._release(trace, binding, decision, fetched, now)
            answer = await self._finish(trace, result, released, decision)
            reservation = None  # the exchange happened: it counts
            return answer
        except AccordError as exc:
            if fetched is not None or exc.code == "subject_not_found":
                reservation = None  # the provider answered for the subject: it counts
            exc.extra.setdefault("exchange_id", trace.exchange_id)
            await self._audit_refusal(trace, exc)
            raise
        except Exception as exc:
            if trace.caller is None:
                raise  # before authentication: the API's handler answers 500 unaudited
            if fetched is not None:
                reservation = None
            # A fault of this gateway after authentication is still a failed exchange:
            # audited, answered under its own id, nothing released. The error's text
            # may quote a provider value, so only its type is logged.
            log.error("exchange_internal_error", error_type=type(exc).__name__)
            error = AccordError(
                "an internal error occurred; nothing was released",
                extra={"exchange_id": trace.exchange_id},
            )
            await self._audit_refusal(trace, error)
            raise error from exc
        finally:
            if reservation is not None:
                await self.admission.give_back(reservation)
            total = time.perf_counter() - trace.started
            self.metrics.stage_seconds.labels("total").observe(total)
            for name, seconds in trace.stages.items():
                self.metrics.stage_seconds.labels(name).observe(seconds)

    async def _decide(
        self,
        trace: Trace,
        dept: Department,
        reservation: QuotaReservation | None,
        now: datetime,
    ) -> Decision:
        caller, request, row = trace.caller, trace.request, trace.agreement
        assert caller is not None
        assert request is not None
        terms = AgreementTerms(row.terms) if row is not None else None
        labels = labels_for(terms, request.dataset)
        wanted = requested_fields(request, terms)
        query = request.query
        spec = aggregate_spec(request)
        policy_input = build_policy_input(
            caller_department=caller.department,
            caller_clearance=dept.clearance,
            caller_caveats=dept.caveats,
            caller_system=caller.system,
            agreement_terms=row.terms if row is not None else None,
            agreement_status=self.agreements.status_at(row, now) if row is not None else None,
            dataset=request.dataset,
            fields={name: labels.get(name) for name in wanted},
            purpose=request.purpose,
            now=now,
            usage_minute=reservation.before_minute if reservation else 0,
            usage_day=reservation.before_day if reservation else 0,
            query_kind=query.kind,
            group_by=spec.get("group_by"),
            sums=spec.get("sums"),
            scheme_levels=self.registry.scheme.levels,
            scheme_name=self.registry.scheme.name,
        )
        trace.policy_input, trace.labels = policy_input, labels
        decision = await self.policy.decide(policy_input)
        if self.decision_log is not None:
            self.decision_log.record(
                exchange_id=trace.exchange_id, policy_input=policy_input, decision=decision
            )
        return decision

    def _verify_within_agreement(self, trace: Trace, decision: Decision, now: datetime) -> None:
        """The signed agreement bounds what the policy allowed, before the provider is
        asked anything: a policy version that allows more (another consumer, a purpose
        or field the agreement does not list, ``pass`` where it says ``pseudonymise``)
        or allows under an agreement not in force (suspended, terminated, superseded,
        outside its validity window) releases nothing. No agreement resolved is no
        bound: refused the same way."""
        request, caller, row = trace.request, trace.caller, trace.agreement
        assert request is not None
        assert caller is not None
        if row is None:
            raise ExceedsAgreement(
                "the policy allowed an exchange under no agreement",
                code="decision_exceeds_agreement",
            )
        assert trace.policy_input is not None  # set by _decide
        assert trace.labels is not None
        terms = AgreementTerms(row.terms)
        status = trace.policy_input["agreement"]["status"]  # as of ``now``, as the policy saw it
        if status != "active" or not terms.in_window(now):
            state = status if status != "active" else "outside its validity window"
            raise ExceedsAgreement(
                f"the policy allowed an exchange under agreement {terms.ref}, which is {state}",
                code="decision_exceeds_agreement",
            )
        verify_within_agreement(
            request=request, decision=decision, terms=terms, consumer=caller.department
        )
        verify_within_classification(decision.obligations, trace.labels, trace.policy_input)

    async def _fetch(
        self, trace: Trace, binding: ResolvedBinding, decision: Decision
    ) -> Sequence[Mapping[str, Any]]:
        """The provider's records, mapped to the canonical model and checked.

        Only the targets the exchange needs are mapped (``wanted_targets``). A
        lookup's record must be the subject's (``verify_record_subject``); a
        predicate the agreement does not open is refused before the provider is
        asked anything."""
        request = trace.request
        assert request is not None
        query = request.query
        if query.kind in ("record", "verify"):
            trace.subject = self.subjects.pseudonym(query.subject)
        if query.kind == "verify":
            verify_predicate_allowed(query.predicate, decision.obligations)
        targets = wanted_targets(binding, request, decision)
        # One budget for the whole read: a paged read's pages share it.
        ctx = FetchContext(
            exchange_id=trace.exchange_id, timeout=self.fetch_timeout_s, purpose=request.purpose
        )
        t = time.perf_counter()
        try:
            records = await fetch_records(
                binding, request, targets, ctx, self.max_aggregate_records
            )
            self.metrics.connector_up.labels(binding.provider, binding.dataset).set(1)
        except ConnectorError as exc:
            if exc.code != "not_found":
                self.metrics.connector_up.labels(binding.provider, binding.dataset).set(0)
            raise connector_fault(exc) from exc
        t = trace.stage("fetch", t)
        try:
            canonical = [binding.mapping.map(r, partial=True, only=targets) for r in records]
        except ConnectorError as exc:
            raise connector_fault(exc) from exc
        if query.kind in ("record", "verify"):
            verify_record_subject(canonical[0], binding.subject_field, query.subject)
        trace.stage("translate", t)
        return canonical

    async def _release(
        self,
        trace: Trace,
        binding: ResolvedBinding,
        decision: Decision,
        canonical: Sequence[Mapping[str, Any]],
        now: datetime,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        request, caller, row = trace.request, trace.caller, trace.agreement
        assert request is not None
        assert caller is not None
        assert row is not None
        t = time.perf_counter()
        target = (
            await asyncio.to_thread(
                self.bindings.consumer_mapping, caller.department, request.target_schema
            )
            if request.target_schema
            else None
        )
        if target is not None and target.source_entity != binding.model:
            raise ValidationFailed(
                f"schema mapping {request.target_schema!r} reads {target.source_entity}, "
                f"but this dataset is {binding.model}",
                code="target_schema_mismatch",
            )
        result, released = released_result(
            request=request,
            records=canonical,
            decision=decision,
            terms=AgreementTerms(row.terms),
            agreement_id=row.agreement_id,
            consumer=caller.department,
            root_secret=self.pseudonym_secret,
            today=now.date(),
            target=target,
        )
        trace.stage("release", t)
        return result, released

    async def _finish(
        self,
        trace: Trace,
        result: dict[str, Any],
        released: dict[str, str],
        decision: Decision,
    ) -> ExchangeAnswer:
        request, caller, row = trace.request, trace.caller, trace.agreement
        assert request is not None
        assert caller is not None
        assert row is not None
        response_sha = hashlib.sha256(canonical_bytes(result)).hexdigest()
        entry = exchange_entry(trace, outcome="released", status=200)
        entry.update(
            decision="allow",
            fields=sorted(released),
            operations=dict(sorted(released.items())),
            response_sha256=response_sha,
        )
        t = time.perf_counter()
        try:
            appended = await self.audit_log.append_async(entry)
        except AuditError as exc:
            log.error("audit_append_failed", code=exc.code, detail=exc.detail)
            raise ServiceUnavailableError(
                "the audit log did not take the exchange; nothing was released",
                code="audit_unavailable",
            ) from exc
        trace.stage("audit", t)
        sealed = json.loads(appended.entry_bytes)
        receipt = sign_receipt(
            self.gateway_key,
            receipt_claims(issuer=self.gateway_id, entry=sealed, leaf_hash=appended.leaf_hash),
            self._receipt_jwk,
        )
        self.metrics.exchanges.labels("released", caller.department, row.provider).inc()
        return ExchangeAnswer(
            exchange_id=trace.exchange_id,
            body={
                "exchange_id": trace.exchange_id,
                "agreement": f"{row.agreement_id}@{row.version}",
                "dataset": request.dataset,
                "purpose": request.purpose,
                "result": result,
                "released": released,
                "policy_version": decision.policy_version,
                "audit": {"seq": appended.seq, "leaf_hash": appended.leaf_hash.hex()},
                "receipt": receipt,
            },
        )

    async def _audit_refusal(self, trace: Trace, exc: AccordError) -> None:
        """Record the refusal; if even that fails the caller still only gets an error."""
        if exc.code == "audit_unavailable":
            return
        entry = refusal_entry(trace, exc)
        outcome = str(entry["outcome"])
        for code in entry.get("reasons", []):
            self.metrics.denials.labels(code).inc()
        consumer = trace.caller.department if trace.caller else "unknown"
        provider = trace.agreement.provider if trace.agreement else "unknown"
        self.metrics.exchanges.labels(outcome, consumer, provider).inc()
        if exc.status == 401:  # a replayed token too: anyone who saw the request has it
            recorded = await self.refusals.auth_failure(entry, exc.code)
        else:
            recorded = await self.refusals.record(entry, refused=exc.code)
        if not recorded:
            exc.extra.setdefault("audit", "unavailable")
