"""The other routes a department system's request token opens: its exchange's
receipt and, for a citizen-portal system, a person's access log.

``ExchangeService`` serves them beside the exchange itself, with the same
verifier, replay cache, log and keys; they run on a worker thread (blocking).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from audit import AuditLog
from gateway.agreements.service import AgreementService
from gateway.auth.requests import Caller, RequestTokenVerifier
from gateway.exchange.counters import ReplayCache
from gateway.exchange.receipts import rebuild_receipt
from gateway.exchange.store_steps import store_errors
from gateway.exchange.subjects import SubjectPseudonyms, subject_accesses
from gateway.jose import PrivateKey

__all__ = ["SystemReads"]


class SystemReads:
    """Receipts and access logs; the attributes are the exchange service's own."""

    gateway_id: str
    verifier: RequestTokenVerifier
    replay: ReplayCache
    clock: Callable[[], datetime]
    audit_log: AuditLog
    gateway_key: PrivateKey
    agreements: AgreementService
    subjects: SubjectPseudonyms

    def verify_caller(
        self,
        token: str,
        *,
        method: str,
        path: str,
        body: bytes,
        verified: Callable[[Caller], None] | None = None,
    ) -> Caller:
        """A department system's request token on the other exchange routes, verified
        and then spent (blocking). ``verified`` hears of the caller in between, so a
        replayed token's refusal can name the system it belongs to."""
        with store_errors():
            caller = self.verifier.verify(
                token, method=method, path=path, body=body, now=self.clock(), defer_replay=True
            )
            if verified is not None:
                verified(caller)
            self.replay(caller.department, caller.jti, caller.replay_until)
            return caller

    def receipt_for(self, exchange_id: str, department: str) -> dict[str, Any]:
        """The exchange's receipt, rebuilt from the log, with an inclusion proof if covered."""
        with store_errors():
            return rebuild_receipt(
                self.audit_log,
                self.gateway_key,
                issuer=self.gateway_id,
                exchange_id=exchange_id,
                department=department,
            )

    def accesses(
        self,
        subject_key: str,
        *,
        caller: Caller,
        limit: int,
        before: int | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        """The citizen's access log, a page walked by ``before`` (``offset`` is kept for
        old clients); the read and any embargo it applied are themselves audited."""
        with store_errors():
            return subject_accesses(
                audit_log=self.audit_log,
                agreements=self.agreements,
                pseudonyms=self.subjects,
                subject_key=subject_key,
                now=self.clock(),
                limit=limit,
                actor=f"{caller.department}/{caller.system}",
                before=before,
                offset=offset,
            )
