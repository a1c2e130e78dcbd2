"""A Python client for department systems: signs request tokens, calls, verifies receipts.

    from gateway.client import AccordClient
    client = AccordClient("http://127.0.0.1:8080", department="welfare-office",
                          system="benefits-app", key=load_private_key_pem(path))
    answer = client.exchange(agreement="welfare-person-lookup", dataset="person",
                             purpose="benefit-eligibility",
                             query={"kind": "record", "subject": "19850312345"})
    answer.records          # the released data
    answer.receipt_claims   # checked: signature, request and response hashes

Every answer is verified before it is handed back: the receipt must verify
against the gateway's published JWKS and must name the SHA-256 of the exact
request body sent and of the ``result`` received. Refusals raise typed errors
carrying the problem's stable ``code`` (and every deny reason).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import rfc8785

from audit.checkpoint import parse_checkpoint
from audit.errors import AuditError
from audit.note import NoteVerifier, open_note, parse_note
from audit.records import InclusionProof
from gateway.auth.requests import sign_request_token
from gateway.exchange.receipts import verify_receipt
from gateway.jose import PrivateKey
from gateway.policy.bundle import audit_version

__all__ = [
    "AccordClient",
    "AccordClientError",
    "Denied",
    "ExchangeAnswer",
    "GatewayFault",
    "InvalidRequest",
    "NotFound",
    "ProviderFailed",
    "ReceiptInvalid",
    "Unauthenticated",
    "Unavailable",
]


class AccordClientError(Exception):
    """A problem+json answer (or a receipt that does not check out)."""

    def __init__(self, status: int, code: str, detail: str, problem: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = dict(problem)

    @property
    def reasons(self) -> list[str]:
        return [str(r.get("code")) for r in self.problem.get("reasons", [])]

    @property
    def exchange_id(self) -> str | None:
        value = self.problem.get("exchange_id")
        return str(value) if value is not None else None


class InvalidRequest(AccordClientError):
    """400/413/415/422: the request itself was wrong."""


class Unauthenticated(AccordClientError):
    """401: the request token was refused."""


class Denied(AccordClientError):
    """403: the policy (or a role) refused; ``reasons`` lists every deny code."""


class NotFound(AccordClientError):
    """404: no such record, dataset binding or exchange."""


class ProviderFailed(AccordClientError):
    """502/504: the provider's system failed; nothing was released."""


class Unavailable(AccordClientError):
    """503: policy engine or audit log unavailable; nothing was released."""


class GatewayFault(AccordClientError):
    """500 (or another server fault): the gateway failed; nothing was released."""


class ReceiptInvalid(AccordClientError):
    """The answer's receipt does not verify or does not describe this exchange."""


def _error_for(status: int) -> type[AccordClientError]:
    if status == 401:
        return Unauthenticated
    if status == 403:
        return Denied
    if status == 404:
        return NotFound
    if status in (502, 504):
        return ProviderFailed
    if status == 503:
        return Unavailable
    if status >= 500:
        return GatewayFault
    return InvalidRequest


@dataclass(frozen=True)
class ExchangeAnswer:
    exchange_id: str
    body: Mapping[str, Any]
    receipt: str
    receipt_claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> Mapping[str, Any]:
        result: Mapping[str, Any] = self.body["result"]
        return result

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self.result.get("records", []))


class AccordClient:
    def __init__(
        self,
        base_url: str,
        *,
        department: str,
        system: str,
        key: PrivateKey,
        audience: str = "accord-gateway",
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.department = department
        self.system = system
        self.audience = audience
        self._key = key
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._jwks: dict[str, Any] | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AccordClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------

    def _token(self, method: str, path: str, body: bytes) -> str:
        return sign_request_token(
            self._key,
            department=self.department,
            system=self.system,
            audience=self.audience,
            method=method,
            path=path,
            body=body,
        )

    def _send(self, method: str, path: str, body: bytes = b"", **params: Any) -> httpx.Response:
        headers = {"Authorization": "Bearer " + self._token(method, path, body)}
        if body:
            headers["Content-Type"] = "application/json"
        response = self._http.request(method, path, content=body, headers=headers, params=params)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"code": "http_error", "detail": response.text[:200]}
            raise _error_for(response.status_code)(
                response.status_code,
                str(problem.get("code", "http_error")),
                str(problem.get("detail", "")),
                problem,
            )
        return response

    def exchange(
        self,
        *,
        agreement: str,
        dataset: str,
        purpose: str,
        query: Mapping[str, Any],
        fields: list[str] | None = None,
        target_schema: str | None = None,
        agreement_version: int | None = None,
    ) -> ExchangeAnswer:
        """Ask for data; returns only once the receipt has been verified."""
        doc: dict[str, Any] = {
            "agreement": agreement,
            "dataset": dataset,
            "purpose": purpose,
            "query": dict(query),
        }
        if fields is not None:
            doc["fields"] = fields
        if target_schema is not None:
            doc["target_schema"] = target_schema
        if agreement_version is not None:
            doc["agreement_version"] = agreement_version
        body = json.dumps(doc).encode()
        answer = self._send("POST", "/v1/exchanges", body).json()
        claims = self.verify_answer(answer, body)
        return ExchangeAnswer(answer["exchange_id"], answer, answer["receipt"], claims)

    def receipt(self, exchange_id: str) -> dict[str, Any]:
        """The receipt again, with an inclusion proof once a checkpoint covers it."""
        doc: dict[str, Any] = self._send("GET", f"/v1/exchanges/{exchange_id}/receipt").json()
        return doc

    def accesses(
        self, subject_key: str, *, limit: int = 50, before: int | None = None, offset: int = 0
    ) -> dict[str, Any]:
        """One page of the citizen's access log (a citizen-portal system only), newest
        first: pass its ``next`` as ``before`` for the next page. ``offset`` is
        deprecated: its pages shift when accesses arrive between them."""
        path = f"/v1/subjects/{subject_key}/accesses"
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        if offset:
            params["offset"] = offset
        doc: dict[str, Any] = self._send("GET", path, **params).json()
        return doc

    def all_accesses(self, subject_key: str, *, page_size: int = 200) -> Iterator[dict[str, Any]]:
        """Every access in the citizen's log, newest first, page by page (each page
        read is audited): none twice and none skipped, while new ones arrive."""
        before: int | None = None
        while True:
            page = self.accesses(subject_key, limit=page_size, before=before)
            yield from page["accesses"]
            if page["next"] is None or (before is not None and page["next"] >= before):
                return  # the last page (or a cursor that does not move back: stop)
            before = page["next"]

    def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        if self._jwks is None or refresh:
            self._jwks = self._http.get("/.well-known/jwks.json").raise_for_status().json()
        return self._jwks

    # -- verification -----------------------------------------------------------

    def verify_answer(self, answer: Mapping[str, Any], request_body: bytes) -> dict[str, Any]:
        """Check the receipt's signature and that it names this request and this result."""
        claims = self._verified(str(answer["receipt"]))
        response_sha = hashlib.sha256(rfc8785.dumps(answer["result"])).hexdigest()
        problems = []
        if claims.get("exchange_id") != answer.get("exchange_id"):
            problems.append("exchange id")
        if claims.get("request_sha256") != hashlib.sha256(request_body).hexdigest():
            problems.append("request hash")
        if claims.get("response_sha256") != response_sha:
            problems.append("response hash")
        # The answer's unsigned summary must say what the signed receipt says.
        decision = claims.get("decision") or {}
        if "released" in answer and answer["released"] != decision.get("released"):
            problems.append("released fields")
        if "agreement" in answer and answer["agreement"] != claims.get("agreement"):
            problems.append("agreement")
        version = audit_version(str(answer.get("policy_version") or ""))
        if "policy_version" in answer and version != claims.get("policy_version"):
            problems.append("policy version")
        audit = answer.get("audit") or {}
        if "audit" in answer and (
            audit.get("seq") != claims.get("seq")
            or audit.get("leaf_hash") != claims.get("leaf_hash")
        ):
            problems.append("audit position")
        if problems:
            raise ReceiptInvalid(
                200, "receipt_mismatch", "receipt does not match: " + ", ".join(problems), answer
            )
        return claims

    def verify_inclusion(
        self, found: Mapping[str, Any], log_key: NoteVerifier | None = None
    ) -> dict[str, Any]:
        """Check what ``receipt`` returned: the receipt's signature (against the
        gateway's JWKS), then an inclusion proof of *that receipt's* entry, and its
        signed checkpoint given the log key. Returns the receipt's claims.

        The proof is bound to the signed claims (``seq`` and ``leaf_hash``), never
        to the unsigned fields around them, so a proof of another entry fails."""
        claims = self._receipt_claims(found)
        proof_doc = found.get("inclusion_proof")
        if not proof_doc:
            raise ReceiptInvalid(200, "no_proof", "no checkpoint covers this entry yet", found)
        try:
            proof = InclusionProof.from_json(proof_doc)
            proof.verify()
            if proof.seq != claims.get("seq") or proof.leaf_hash.hex() != claims.get("leaf_hash"):
                why = "the proof is for another entry than the receipt's"
                raise ReceiptInvalid(200, "proof_mismatch", why, found)
            if proof.checkpoint is not None:
                if log_key is not None:
                    text = open_note(proof.checkpoint, [log_key])[0]
                else:
                    text = parse_note(proof.checkpoint).text
                checkpoint = parse_checkpoint(text)
                if checkpoint.size != proof.tree_size or checkpoint.root != proof.root:
                    raise ReceiptInvalid(
                        200, "proof_mismatch", "checkpoint and proof disagree", found
                    )
        except AuditError as exc:
            raise ReceiptInvalid(200, exc.code, exc.detail, found) from exc
        return claims

    def _receipt_claims(self, found: Mapping[str, Any]) -> dict[str, Any]:
        """The verified claims of ``found["receipt"]``, which must name ``found``'s exchange."""
        try:
            claims = self._verified(str(found.get("receipt", "")))
        except Exception as exc:
            raise ReceiptInvalid(
                200, "receipt_invalid", f"the receipt does not verify: {exc}", found
            ) from exc
        if claims.get("exchange_id") != found.get("exchange_id"):
            why = "the receipt names another exchange"
            raise ReceiptInvalid(200, "receipt_mismatch", why, found)
        return claims

    def _verified(self, receipt: str) -> dict[str, Any]:
        """``verify_receipt`` against the JWKS, fetched again once if it fails (a new key)."""
        try:
            return verify_receipt(receipt, self.jwks())
        except Exception:
            return verify_receipt(receipt, self.jwks(refresh=True))
