"""Keys as JWKs: generation, RFC 7638 thumbprints, signing and verification."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gateway.errors import SignatureError, ValidationFailed

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

ALGORITHMS = ("EdDSA", "ES256")

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); anything else is refused."""
    if not isinstance(text, str) or "=" in text or any(c in text for c in "+/ \n\r\t"):
        raise ValidationFailed("not base64url", code="malformed_base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("not base64url", code="malformed_base64url") from exc


def generate_private_key(alg: str = "EdDSA") -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValidationFailed(f"unsupported algorithm {alg!r}", code="unsupported_algorithm")


def alg_for_key(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValidationFailed("only Ed25519 and P-256 keys are supported", code="unsupported_key")


def _public(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        return key.public_key()
    return key


def _required_members(key: PublicKey) -> dict[str, str]:
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    numbers = key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) over the required members only."""
    kty = jwk.get("kty")
    names = {
        "OKP": ("crv", "kty", "x"),
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),  # thumbprints only; RSA keys are never accepted to verify
    }.get(str(kty))
    if names is None:
        raise ValidationFailed(f"unsupported key type {kty!r}", code="unsupported_key")
    members = {}
    for name in names:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValidationFailed(f"JWK member {name!r} missing", code="malformed_jwk")
        members[name] = value
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(key: PrivateKey | PublicKey) -> dict[str, str]:
    """The public JWK of a key, with ``alg``, ``use`` and ``kid`` = RFC 7638 thumbprint."""
    members = _required_members(_public(key))
    return {**members, "alg": alg_for_key(key), "use": "sig", "kid": jwk_thumbprint(members)}


def public_key_from_jwk(jwk: dict[str, Any]) -> tuple[PublicKey, str]:
    """Parse a public JWK; returns the key and its algorithm. Private members are refused."""
    if not isinstance(jwk, dict):
        raise ValidationFailed("a JWK must be a JSON object", code="malformed_jwk")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise ValidationFailed("refusing a JWK with private key material", code="private_jwk")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "OKP" and crv == "Ed25519":
            raw = b64url_decode(str(jwk.get("x", "")))
            okp: PublicKey = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            key, alg = okp, "EdDSA"
        elif kty == "EC" and crv == "P-256":
            x = b64url_decode(str(jwk.get("x", "")))
            y = b64url_decode(str(jwk.get("y", "")))
            if len(x) != 32 or len(y) != 32:
                raise ValueError("P-256 coordinates must be 32 bytes")
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
            alg = "ES256"
        else:
            raise ValidationFailed(
                f"unsupported key kty={kty!r} crv={crv!r}; use Ed25519 or P-256",
                code="unsupported_key",
            )
    except (ValueError, ValidationFailed) as exc:
        if isinstance(exc, ValidationFailed) and exc.code == "unsupported_key":
            raise
        raise ValidationFailed(f"invalid public key: {exc}", code="malformed_jwk") from exc
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        raise ValidationFailed(f"JWK alg {declared!r} does not fit its key", code="malformed_jwk")
    return key, alg


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    der = key.sign(data, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_bytes(key: PublicKey, alg: str, data: bytes, signature: bytes) -> None:
    """Raise ``SignatureError`` unless ``signature`` is valid; ``alg`` must fit the key."""
    if alg not in ALGORITHMS or alg != alg_for_key(key):
        raise SignatureError(f"algorithm {alg!r} not allowed for this key", code="bad_algorithm")
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
            return
        if len(signature) != 64:
            raise SignatureError("ES256 signature must be 64 bytes", code="signature_invalid")
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify", code="signature_invalid") from exc


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(path: Path | str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:  # its own text would name the path a second time
        why = exc.strerror or exc.__class__.__name__
        raise ValidationFailed(
            f"cannot load private key {path}: {why}", code="bad_key_file"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(
            f"cannot load private key {path}: {exc}", code="bad_key_file"
        ) from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValidationFailed(
        "only Ed25519 and P-256 private keys are supported", code="unsupported_key"
    )
