"""Agreements signed by Accord verify with independent JOSE libraries, and vice versa."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from joserfc import jws as rfc_jws
from joserfc.jwk import OKPKey
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws

from gateway.agreements.signing import verify_agreement
from gateway.errors import SignatureError
from gateway.jose import b64url_encode, generate_private_key, jwk_thumbprint, public_jwk
from gateway.jose.jws import canonical_bytes

VECTOR = json.loads(
    (Path(__file__).parent / "vectors" / "agreement_two_party.json").read_text(encoding="utf-8")
)


def resolver_for(keys: dict[str, dict]):  # type: ignore[no-untyped-def]
    from gateway.jose import public_key_from_jwk

    by_kid = {jwk_thumbprint(j): (dept, j) for dept, j in keys.items()}

    def resolve(kid: str, dept: str, now: datetime, signed_at: datetime):  # type: ignore[no-untyped-def]
        owner, jwk = by_kid.get(kid, (None, None))
        if owner != dept:
            raise SignatureError("wrong key", code="wrong_department_key")
        return public_key_from_jwk(jwk)

    return resolve


def test_vector_verifies_with_accord() -> None:
    verified = verify_agreement(
        VECTOR["signed"], resolver_for(VECTOR["keys"]), datetime(2026, 3, 1, tzinfo=UTC)
    )
    assert {s.party for s in verified.signatures} == {"provider", "consumer"}
    assert verified.jws.payload == VECTOR["canonical_terms"].encode("utf-8")


def test_vector_verifies_with_jwcrypto() -> None:
    token = jc_jws.JWS()
    token.deserialize(json.dumps(VECTOR["signed"]))
    for dept in ("civil-registry", "welfare-office"):
        key = jc_jwk.JWK(**VECTOR["keys"][dept])
        token.verify(key)  # raises on failure
        assert token.payload == VECTOR["canonical_terms"].encode("utf-8")


def test_vector_verifies_with_joserfc() -> None:
    from joserfc.jwk import ECKey, KeySet
    from joserfc.jws import JWSRegistry
    from joserfc.registry import HeaderParameter

    registry = JWSRegistry(
        header_registry={
            "party": HeaderParameter("signing party", "str"),
            "iat": HeaderParameter("signing time", "int"),
        },
        algorithms=["EdDSA", "ES256"],
    )
    keys = KeySet(
        [
            OKPKey.import_key(VECTOR["keys"]["civil-registry"]),
            ECKey.import_key(VECTOR["keys"]["welfare-office"]),
        ]
    )
    result = rfc_jws.deserialize_json(VECTOR["signed"], keys, registry=registry)
    assert result.payload == VECTOR["canonical_terms"].encode("utf-8")
    assert len(result.members) == 2


def test_agreement_signed_by_jwcrypto_verifies_with_accord() -> None:
    terms = VECTOR["terms"]
    payload = canonical_bytes(terms)
    provider, consumer = generate_private_key("EdDSA"), generate_private_key("ES256")
    keys = {"civil-registry": public_jwk(provider), "welfare-office": public_jwk(consumer)}
    from gateway.jose import private_key_pem

    token = jc_jws.JWS(payload)
    signed_at = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())
    for party, key, jwk in (
        ("provider", provider, keys["civil-registry"]),
        ("consumer", consumer, keys["welfare-office"]),
    ):
        private = jc_jwk.JWK.from_pem(private_key_pem(key))
        token.add_signature(
            private,
            None,
            json.dumps({"alg": jwk["alg"], "kid": jwk["kid"], "party": party, "iat": signed_at}),
        )
    doc = json.loads(token.serialize())
    verified = verify_agreement(doc, resolver_for(keys), datetime(2026, 3, 1, tzinfo=UTC))
    assert verified.terms.ref == "vector-person-lookup@1"


def test_payload_encoding_is_plain_base64url_of_jcs() -> None:
    assert VECTOR["signed"]["payload"] == b64url_encode(canonical_bytes(VECTOR["terms"]))
