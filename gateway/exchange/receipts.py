"""Receipts: what the gateway signs for the consumer about one exchange.

A receipt is a JWS compact (``typ: accord-receipt+jwt``) signed with the
gateway key over the facts of the exchange's audit entry: exchange id, seq,
leaf hash, request and response SHA-256, decision, agreement@version, policy
version and the entry's time. Because every claim comes from the stored entry
and Ed25519 signatures are deterministic, a receipt can be rebuilt from the log
at any time and is byte-for-byte the one returned with the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from audit import AuditError, AuditLog
from gateway.errors import NotFoundError, SignatureError
from gateway.jose import PrivateKey, public_jwk

__all__ = [
    "RECEIPT_TYPE",
    "rebuild_receipt",
    "receipt_claims",
    "sign_receipt",
    "verify_receipt",
]

RECEIPT_TYPE = "accord-receipt+jwt"


def receipt_claims(*, issuer: str, entry: Mapping[str, Any], leaf_hash: bytes) -> dict[str, Any]:
    """The receipt's claims, read off the sealed audit entry."""
    return {
        "iss": issuer,
        "exchange_id": entry["exchange_id"],
        "seq": entry["seq"],
        "leaf_hash": leaf_hash.hex(),
        "request_sha256": entry.get("request_sha256"),
        "response_sha256": entry.get("response_sha256"),
        "decision": {
            "allow": entry.get("decision") == "allow",
            "released": dict(entry.get("operations") or {}),
            "reasons": list(entry.get("reasons") or []),
        },
        "agreement": entry.get("agreement"),
        "policy_version": entry.get("policy_version"),
        "consumer": entry.get("consumer"),
        "provider": entry.get("provider"),
        "ts": entry["ts"],
    }


def sign_receipt(
    key: PrivateKey, claims: Mapping[str, Any], jwk: Mapping[str, str] | None = None
) -> str:
    """The receipt as JWS compact; ``jwk``: ``public_jwk(key)`` if the caller keeps it
    (its thumbprint costs about a sixth of the signing)."""
    jwk = jwk if jwk is not None else public_jwk(key)
    return jwt.encode(
        dict(claims), key, algorithm=jwk["alg"], headers={"typ": RECEIPT_TYPE, "kid": jwk["kid"]}
    )


def verify_receipt(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Check a receipt against a published JWK Set; return its claims or raise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise SignatureError("not a JWS compact receipt", code="receipt_invalid") from exc
    if header.get("typ") != RECEIPT_TYPE or header.get("alg") not in ("EdDSA", "ES256"):
        raise SignatureError("not an Accord receipt", code="receipt_invalid")
    for jwk in jwks.get("keys", []):
        if jwk.get("kid") == header.get("kid"):
            key = jwt.PyJWK(dict(jwk))
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, key, algorithms=[header["alg"]], options={"verify_aud": False}
                )
            except jwt.PyJWTError as exc:
                raise SignatureError(
                    "receipt signature does not verify", code="receipt_invalid"
                ) from exc
            return claims
    raise SignatureError("the receipt's key is not published", code="receipt_invalid")


def rebuild_receipt(
    audit_log: AuditLog, key: PrivateKey, *, issuer: str, exchange_id: str, department: str
) -> dict[str, Any]:
    """Re-sign the receipt of a released exchange from its entry; only for its consumer.

    The proof is included once a signed checkpoint covers the entry, so the
    consumer can show the exchange is in the log the auditors verify.
    """
    for stored in audit_log.entries_by_exchange(exchange_id):
        doc = stored.doc()
        if doc.get("event") != "exchange" or doc.get("outcome") != "released":
            continue
        if doc.get("consumer") != department:
            break
        receipt = sign_receipt(
            key, receipt_claims(issuer=issuer, entry=doc, leaf_hash=stored.leaf_hash)
        )
        proof = None
        try:
            candidate = audit_log.inclusion_proof(stored.seq)
            if candidate.checkpoint is not None:
                proof = candidate.to_json()
        except AuditError:
            proof = None
        return {
            "exchange_id": exchange_id,
            "receipt": receipt,
            "seq": stored.seq,
            "inclusion_proof": proof,
        }
    raise NotFoundError(f"no receipt for exchange {exchange_id!r}", code="unknown_exchange")
