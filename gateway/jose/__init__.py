"""JOSE building blocks we rely on: JWK (RFC 7517/7638) and JWS (RFC 7515).

Only two algorithms exist here, EdDSA (Ed25519) and ES256 (P-256). Any other
``alg`` is refused before a key is even looked at, which closes the classic
``none`` and HS256 key-confusion attacks by construction.
"""

from gateway.jose.jwk import (
    ALGORITHMS,
    PrivateKey,
    PublicKey,
    b64url_decode,
    b64url_encode,
    generate_private_key,
    jwk_thumbprint,
    load_private_key_pem,
    private_key_pem,
    public_jwk,
    public_key_from_jwk,
    sign_bytes,
    verify_bytes,
)

__all__ = [
    "ALGORITHMS",
    "PrivateKey",
    "PublicKey",
    "b64url_decode",
    "b64url_encode",
    "generate_private_key",
    "jwk_thumbprint",
    "load_private_key_pem",
    "private_key_pem",
    "public_jwk",
    "public_key_from_jwk",
    "sign_bytes",
    "verify_bytes",
]
