"""Makes agreement_two_party.json: a JWS General JSON agreement signed by two parties.

Run from the repository root: ``python tests/gateway/vectors/make_agreement_vector.py``.
Keys are derived from fixed seeds so the public keys are reproducible; the
Ed25519 signature is deterministic, the ES256 one is not (ECDSA uses a random
nonce), so a rerun changes only the consumer's signature bytes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.agreements.signing import sign_agreement
from gateway.agreements.terms import AgreementTerms
from gateway.jose import public_jwk

HERE = Path(__file__).parent
SIGNED_AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


def provider_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(b"accord-vector-provider").digest()
    )


def consumer_key() -> ec.EllipticCurvePrivateKey:
    secret = int.from_bytes(hashlib.sha256(b"accord-vector-consumer").digest(), "big")
    return ec.derive_private_key(secret, ec.SECP256R1())


TERMS = {
    "accord_agreement": "1",
    "id": "vector-person-lookup",
    "version": 1,
    "title": "Vector: registry → welfare, person data",
    "provider": "civil-registry",
    "consumer": "welfare-office",
    "required_parties": ["provider", "consumer"],
    "purposes": [{"code": "benefit-eligibility", "legal_basis": "Social Welfare Act s.12"}],
    "classification_ceiling": "confidential",
    "caveats": [],
    "valid_from": "2026-01-01T00:00:00Z",
    "valid_until": "2027-01-01T00:00:00Z",
    "quotas": {"per_minute": 60, "per_day": 1000},
    "datasets": [
        {
            "id": "person",
            "model": "person@1",
            "fields": {
                "given_name": {"operation": "pass"},
                "birth_date": {"operation": "generalise", "to": "year"},
            },
        }
    ],
    "retention": {"max_days": 30},
    "onward_sharing": False,
}


def main() -> None:
    terms = AgreementTerms.from_json(TERMS)
    jws = sign_agreement(
        {"payload": "", "signatures": []},
        provider_key(),
        party="provider",
        terms=terms,
        now=SIGNED_AT,
    )
    jws = sign_agreement(jws, consumer_key(), party="consumer", now=SIGNED_AT)
    out = {
        "terms": TERMS,
        "canonical_terms": terms.canonical().decode("utf-8"),
        "keys": {
            "civil-registry": public_jwk(provider_key()),
            "welfare-office": public_jwk(consumer_key()),
        },
        "signed_at": SIGNED_AT.isoformat(),
        "signed": jws.to_json(),
    }
    (HERE / "agreement_two_party.json").write_text(
        json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
