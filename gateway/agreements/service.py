"""Agreement lifecycle: submit, activate, suspend, revoke, expire, resolve.

Nothing is stored unless it verifies. An agreement is active only while all
its required signatures verify with keys that are still good, so a revoked
department key takes every agreement it signed out of service at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.agreements.datasets import verify_dataset_fields
from gateway.agreements.models import Agreement, AgreementEvent, AgreementPublic
from gateway.agreements.parties import verify_parties
from gateway.agreements.refusals import audit_refusal
from gateway.agreements.schedule import in_force, next_takeover, takeovers_due
from gateway.agreements.signers import agreement_key
from gateway.agreements.signing import VerifiedAgreement, verify_agreement
from gateway.agreements.terms import AgreementTerms
from gateway.agreements.versions import new_row, older_active, refuse_existing, signed_row
from gateway.auditing import AuditSink, audit_event
from gateway.db import session_scope
from gateway.dbtypes import utcnow
from gateway.errors import AccordError, AgreementError, ConflictError, NotFoundError
from gateway.jose import PublicKey
from gateway.registry.service import RegistryService
from gateway.statecache import READ_GENERATION, bump_generation

__all__ = ["AgreementService", "ResolvedAgreement"]

_ALLOWED = {
    ("draft", "active"),
    ("active", "suspended"),
    ("suspended", "active"),
    ("active", "revoked"),
    ("suspended", "revoked"),
    ("draft", "revoked"),
}

ResolvedAgreement = VerifiedAgreement


class AgreementService:
    def __init__(
        self,
        engine: Engine,
        registry: RegistryService,
        audit: AuditSink | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.audit = audit
        self.clock = clock

    def resolve_key(
        self, kid: str, department: str, now: datetime, signed_at: datetime
    ) -> tuple[PublicKey, str]:
        """The key that verifies a party's signature: one the department may sign
        agreements with (``signers.agreement_key``)."""
        return agreement_key(self.registry, kid, department, now, signed_at)

    def verify(self, signed: Any, now: datetime | None = None) -> VerifiedAgreement:
        return verify_agreement(signed, self.resolve_key, now or self.clock())

    def _event(
        self,
        s: Session,
        row: Agreement,
        to: str,
        actor: str,
        reason: str,
        now: datetime,
        *,
        previous: str | None = None,
    ) -> None:
        assert row.pk is not None
        before = previous or row.status
        from_status = before if before != to else None
        s.add(
            AgreementEvent(
                agreement_pk=row.pk,
                from_status=from_status,
                to_status=to,
                actor=actor,
                reason=reason,
                at=now,
            )
        )
        s.flush()
        bump_generation(s.connection())
        if self.audit is not None:
            self.audit.append_in(
                s.connection(),
                audit_event(
                    "agreement_change",
                    actor=actor,
                    outcome=to,
                    agreement=f"{row.agreement_id}@{row.version}",
                    provider=row.provider,
                    consumer=row.consumer,
                    from_status=from_status,
                    reason=reason or None,
                    terms_sha256=row.terms_sha256,
                ),
            )

    def create_draft(self, terms_doc: Any, *, actor: str, body: bytes | None = None) -> Agreement:
        """Store unsigned terms as a draft; a refusal is audited as ``submit``'s is."""
        try:
            return self._create_draft(terms_doc, actor=actor)
        except AccordError as exc:
            audit_refusal(self.audit, terms_doc, exc, actor=actor, kind="draft", body=body)
            raise

    def _create_draft(self, terms_doc: Any, *, actor: str) -> Agreement:
        terms = AgreementTerms.from_json(terms_doc)
        self._verify_terms(terms)
        now = self.clock()
        with session_scope(self.engine) as s:
            refuse_existing(s, terms)
            row = new_row(terms, None, "draft", now)
            s.add(row)
            s.flush()
            self._event(s, row, "draft", actor, "draft created", now)
            return row

    def submit(self, signed: Any, *, actor: str, body: bytes | None = None) -> Agreement:
        """Store a fully signed agreement as active (or activate its matching draft).

        A refusal (bad signature, schema, party, model field, window, version) is
        audited before it is raised: nothing is stored, but the attempt is on record,
        with the SHA-256 of ``body``, the request body exactly as received (None: an
        in-process caller, which sent no request).
        """
        try:
            return self._submit(signed, actor=actor)
        except AccordError as exc:
            audit_refusal(self.audit, signed, exc, actor=actor, kind="signed", body=body)
            raise

    def _verify_terms(self, terms: AgreementTerms) -> None:
        verify_parties(self.registry, terms)
        verify_dataset_fields(terms)

    def _submit(self, signed: Any, *, actor: str) -> Agreement:
        now = self.clock()
        verified = self.verify(signed, now)
        terms = verified.terms
        if now >= terms.valid_until:
            raise AgreementError(
                f"{terms.ref} expired at {terms.doc['valid_until']}; it would put no agreement"
                " in force and cut off the one that is",
                code="agreement_expired",
            )
        self._verify_terms(terms)
        with session_scope(self.engine) as s:
            row = signed_row(s, terms, verified.jws.to_json(), now)
            older = older_active(s, terms)
            reason = "all required signatures verified"
            if now < terms.valid_from and older:
                # The version in force stays so until this one's window opens; the
                # takeover is recorded then (``take_over_due``), once, by any node.
                reason += (
                    f"; takes over from version {max(o.version for o in older)}"
                    f" at {terms.doc['valid_from']}"
                )
            else:
                for old in older:
                    self._event(
                        s, old, "superseded", actor, f"superseded by version {terms.version}", now
                    )
                    old.status, old.updated_at = "superseded", now
                    s.add(old)
            self._event(s, row, "active", actor, reason, now)
            self._record_embargo(s, row, terms, actor)
            row.status, row.updated_at = "active", now
            s.add(row)
            return row

    def _record_embargo(
        self, s: Session, row: Agreement, terms: AgreementTerms, actor: str
    ) -> None:
        """An embargo hides this agreement's accesses from data subjects: audit that it exists.

        The entry names the agreement and the date, so an auditor can list every
        embargo in force and check it against the legal ground the agreement cites.
        """
        embargo = terms.doc.get("embargo_until")
        if embargo is None or self.audit is None:
            return
        self.audit.append_in(
            s.connection(),
            audit_event(
                "embargo",
                actor=actor,
                outcome="declared",
                agreement=f"{row.agreement_id}@{row.version}",
                provider=row.provider,
                consumer=row.consumer,
                embargo_until=str(embargo),
            ),
        )

    def transition(
        self,
        agreement_id: str,
        version: int,
        to: str,
        *,
        actor: str,
        reason: str,
        body: bytes | None = None,
    ) -> Agreement:
        """Suspend, reactivate or revoke a version. A refusal is audited as a refused
        submission's is (``transition``, with ``body`` hashed), naming the agreement
        only if it exists: the caller's identifiers are not copied into the log."""
        try:
            return self._transition(agreement_id, version, to, actor=actor, reason=reason)
        except AccordError as exc:
            try:
                stored: Any = self.get(agreement_id, version).terms
            except NotFoundError:
                stored = None
            target = {"to_status": to} if to in {t for _, t in _ALLOWED} else {}
            audit_refusal(
                self.audit, stored, exc, actor=actor, kind="transition", body=body, **target
            )
            raise

    def _transition(
        self, agreement_id: str, version: int, to: str, *, actor: str, reason: str
    ) -> Agreement:
        now = self.clock()
        with session_scope(self.engine) as s:
            row = s.exec(
                select(Agreement)
                .where(Agreement.agreement_id == agreement_id, Agreement.version == version)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFoundError(
                    f"unknown agreement {agreement_id}@{version}", code="unknown_agreement"
                )
            current = self._effective_status(row, now)
            if (current, to) not in _ALLOWED:
                raise ConflictError(f"cannot go from {current} to {to}", code="bad_transition")
            if to == "active":
                if row.signed is None:
                    raise AgreementError(
                        "a draft needs all signatures to become active", code="missing_signature"
                    )
                self.verify(row.signed, now)
            self._event(s, row, to, actor, reason, now)
            row.status, row.updated_at = to, now
            s.add(row)
            return row

    @staticmethod
    def _effective_status(row: Agreement, now: datetime) -> str:
        if row.status == "active" and now >= AgreementTerms(row.terms).valid_until:
            return "expired"
        return row.status

    def get(self, agreement_id: str, version: int | None = None) -> Agreement:
        """That version, or without one the version in force now (``schedule.in_force``:
        the newest, unless it waits for its window while an older one is active)."""
        with Session(self.engine) as s:
            q = select(Agreement).where(Agreement.agreement_id == agreement_id)
            if version is not None:
                row = s.exec(q.where(Agreement.version == version)).first()
            else:
                row = in_force(list(s.exec(q.where(Agreement.status != "draft"))), self.clock())
            if row is None:
                raise NotFoundError(f"unknown agreement {agreement_id!r}", code="unknown_agreement")
            return row

    def list_all(self, *, department: str | None = None) -> list[Agreement]:
        with Session(self.engine) as s:
            q = select(Agreement)
            if department:
                q = q.where((Agreement.provider == department) | (Agreement.consumer == department))
            return list(s.exec(q.order_by(col(Agreement.agreement_id), col(Agreement.version))))

    def events(self, agreement_id: str, version: int) -> list[AgreementEvent]:
        row = self.get(agreement_id, version)
        with Session(self.engine) as s:
            return list(
                s.exec(
                    select(AgreementEvent)
                    .where(AgreementEvent.agreement_pk == row.pk)
                    .order_by(col(AgreementEvent.id))
                )
            )

    def expire_due(self, *, actor: str = "system:clock") -> int:
        """Record, once, the expiry of every active agreement past its window.

        Every gateway process runs this (``ExpiryWatch``), so two nodes may find
        the same agreement due at the same moment. Each claims it with a
        conditional ``UPDATE … WHERE status = 'active'`` as the first statement
        of its own transaction: the database lets exactly one of them change the
        row, and only that one writes the event and the audit entry. Returns how
        many expiries this call recorded.
        """
        now = self.clock()
        due = [
            row.pk
            for row in self._active()
            if self._effective_status(row, now) == "expired" and row.pk is not None
        ]
        return sum(self._expire(pk, actor, now) for pk in due)

    def _expire(self, pk: int, actor: str, now: datetime) -> bool:
        return self._claim(pk, "expired", "validity window ended", actor, now)

    def take_over_due(self, *, actor: str = "system:clock") -> int:
        """Record, once, every takeover due: an active version whose newer version's
        window has opened becomes ``superseded`` (event, audit entry, and the state
        generation moves, so every node's cached agreement is dropped). Claimed as
        ``expire_due`` claims an expiry. Returns how many this call recorded."""
        now = self.clock()
        return sum(
            self._claim(
                pk, "superseded", f"superseded by version {by} at its valid_from", actor, now
            )
            for pk, by in takeovers_due(self._active(), now)
        )

    def next_takeover(self) -> datetime | None:
        """When the next version waiting for its window takes over (None: none waits)."""
        return next_takeover(self._active(), self.clock())

    def state_generation(self) -> int | None:
        """The shared counter every agreement change moves (``bump_generation``)."""
        with self.engine.connect() as conn:
            value = conn.execute(text(READ_GENERATION)).scalar()
        return int(value) if value is not None else None

    def _active(self) -> Sequence[Agreement]:
        with Session(self.engine) as s:
            return list(s.exec(select(Agreement).where(Agreement.status == "active")))

    def _claim(self, pk: int, to: str, reason: str, actor: str, now: datetime) -> bool:
        with session_scope(self.engine) as s:
            claimed = s.connection().execute(
                update(Agreement)
                .where(col(Agreement.pk) == pk, col(Agreement.status) == "active")
                .values(status=to, updated_at=now)
            )
            if claimed.rowcount != 1:
                return False  # another node recorded it, or someone changed it first
            row = s.get(Agreement, pk)
            assert row is not None
            self._event(s, row, to, actor, reason, now, previous="active")
            return True

    def status_at(self, row: Agreement, now: datetime) -> str:
        """The lifecycle status the exchange policy judges as of ``now``: an active
        agreement past its window reads as expired. Before its window it stays
        ``active``: the policy judges the window itself and says "agreement is not
        yet valid" (``public`` shows it as ``not_yet_valid``)."""
        return self._effective_status(row, now)

    def public(self, row: Agreement, now: datetime | None = None) -> AgreementPublic:
        """The version as the API and CLI show it, as of ``now``, not the stored status
        (which changes only when an expiry or takeover has been recorded):
        ``superseded`` once a newer version has taken over, ``not_yet_valid`` before
        its window, ``expired`` after it."""
        when = now or self.clock()
        status = self.status_at(row, when)
        if status == "active":
            if self._taken_over(row, when):
                status = "superseded"
            elif when < AgreementTerms(row.terms).valid_from:
                status = "not_yet_valid"
        return AgreementPublic.model_validate(row, update={"status": status})

    def _taken_over(self, row: Agreement, now: datetime) -> bool:
        with Session(self.engine) as s:
            siblings = s.exec(
                select(Agreement).where(
                    Agreement.agreement_id == row.agreement_id, Agreement.status == "active"
                )
            )
            return any(pk == row.pk for pk, _ in takeovers_due(list(siblings), now))
