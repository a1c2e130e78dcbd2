"""JWS General JSON Serialization (RFC 7515 §7.2.1) for multi-party documents.

Sharing agreements are signed by several departments over one payload: the
RFC 8785 canonical bytes of the terms. Each signature has its own protected
header (``alg``, ``kid``, ``party``, ``iat``), so any JOSE library can verify it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import rfc8785

from gateway.errors import SignatureError, ValidationFailed
from gateway.jose.jwk import (
    ALGORITHMS,
    PrivateKey,
    PublicKey,
    alg_for_key,
    b64url_decode,
    b64url_encode,
    sign_bytes,
    verify_bytes,
)

__all__ = ["GeneralJWS", "SignatureEntry", "canonical_bytes", "sign_general"]


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical UTF-8 bytes."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ValidationFailed(
            f"value cannot be canonicalised: {exc}", code="not_canonicalisable"
        ) from exc


@dataclass(frozen=True)
class SignatureEntry:
    protected_b64: str
    header: dict[str, Any]
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header.get("alg"))

    @property
    def kid(self) -> str:
        return str(self.header.get("kid"))

    def verify(self, payload_b64: str, key: PublicKey) -> None:
        signing_input = f"{self.protected_b64}.{payload_b64}".encode("ascii")
        verify_bytes(key, self.alg, signing_input, self.signature)


@dataclass(frozen=True)
class GeneralJWS:
    payload_b64: str
    signatures: tuple[SignatureEntry, ...]

    @property
    def payload(self) -> bytes:
        return b64url_decode(self.payload_b64)

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": self.payload_b64,
            "signatures": [
                {"protected": s.protected_b64, "signature": b64url_encode(s.signature)}
                for s in self.signatures
            ],
        }

    def with_signature(self, key: PrivateKey, header: dict[str, Any]) -> GeneralJWS:
        alg = alg_for_key(key)
        full = {**header, "alg": alg}
        protected_b64 = b64url_encode(canonical_bytes(full))
        sig = sign_bytes(key, f"{protected_b64}.{self.payload_b64}".encode("ascii"))
        entry = SignatureEntry(protected_b64, full, sig)
        return GeneralJWS(self.payload_b64, (*self.signatures, entry))

    @classmethod
    def from_json(cls, doc: Any) -> GeneralJWS:
        """Parse strictly: unknown members, unprotected headers and bad encodings are refused."""
        if not isinstance(doc, dict) or set(doc) - {"payload", "signatures"}:
            raise SignatureError(
                "a signed agreement is a JWS General JSON object with payload and signatures",
                code="malformed_jws",
            )
        payload_b64, sigs = doc.get("payload"), doc.get("signatures")
        if not isinstance(payload_b64, str) or not isinstance(sigs, list):
            raise SignatureError("payload and signatures are required", code="malformed_jws")
        entries = []
        for i, raw in enumerate(sigs):
            if not isinstance(raw, dict) or set(raw) - {"protected", "signature"}:
                raise SignatureError(
                    f"signature {i}: only protected headers are accepted", code="malformed_jws"
                )
            protected_b64, sig_b64 = raw.get("protected"), raw.get("signature")
            if not isinstance(protected_b64, str) or not isinstance(sig_b64, str):
                raise SignatureError(f"signature {i} is incomplete", code="malformed_jws")
            try:
                header = json.loads(b64url_decode(protected_b64))
                signature = b64url_decode(sig_b64)
            except (ValidationFailed, ValueError) as exc:
                raise SignatureError(
                    f"signature {i} is not decodable", code="malformed_jws"
                ) from exc
            if not isinstance(header, dict):
                raise SignatureError(f"signature {i} header is not an object", code="malformed_jws")
            if header.get("alg") not in ALGORITHMS:
                raise SignatureError(
                    f"signature {i}: alg {header.get('alg')!r} is not allowed", code="bad_algorithm"
                )
            if "crit" in header:
                raise SignatureError(f"signature {i}: crit is not supported", code="malformed_jws")
            entries.append(SignatureEntry(protected_b64, header, signature))
        try:
            b64url_decode(payload_b64)
        except ValidationFailed as exc:
            raise SignatureError("payload is not base64url", code="malformed_jws") from exc
        return cls(payload_b64, tuple(entries))


def sign_general(payload: bytes) -> GeneralJWS:
    """An unsigned envelope over ``payload``; add signatures with ``with_signature``."""
    return GeneralJWS(b64url_encode(payload), ())
