"""Human users authenticate with JWTs from an OIDC issuer.

Production points ``ACCORD_OIDC_JWKS_URL`` at the organisation's issuer. For
development and the demo, ``accord token issue --role officer`` signs tokens
with a local dev issuer key that the gateway trusts only in dev mode.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.errors import AuthError, ForbiddenError, ValidationFailed
from gateway.jose import (
    PrivateKey,
    generate_private_key,
    load_private_key_pem,
    private_key_pem,
    public_jwk,
    public_key_from_jwk,
)

__all__ = [
    "DEV_ISSUER",
    "ROLES",
    "HumanVerifier",
    "Principal",
    "dev_issuer_key",
    "issue_dev_token",
]

ROLES = ("admin", "officer", "auditor", "department")
DEV_ISSUER = "urn:accord:dev-issuer"


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]
    department: str | None = None

    @property
    def actor(self) -> str:
        return f"user:{self.subject}"

    def verify_role(self, *allowed: str) -> None:
        if not self.roles & set(allowed):
            raise ForbiddenError(
                f"this needs one of the roles {', '.join(allowed)}", code="role_required"
            )


def dev_issuer_key(key_dir: Path) -> PrivateKey:
    """The local dev issuer key, created on first use (file mode 0600)."""
    path = key_dir / "dev-issuer.pem"
    if not path.exists():
        key_dir.mkdir(parents=True, exist_ok=True)
        key = generate_private_key("EdDSA")
        path.touch(mode=0o600)
        path.write_bytes(private_key_pem(key))
        return key
    return load_private_key_pem(path)


def issue_dev_token(
    key: PrivateKey,
    *,
    subject: str,
    roles: Sequence[str],
    audience: str,
    department: str | None = None,
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    bad = set(roles) - set(ROLES)
    if bad:
        known = ", ".join(sorted(ROLES))
        raise ValidationFailed(
            f"unknown roles {', '.join(sorted(bad))} (known: {known})", code="unknown_role"
        )
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": DEV_ISSUER,
        "sub": subject,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
        "roles": list(roles),
    }
    if department:
        claims["department"] = department
    jwk = public_jwk(key)
    return jwt.encode(claims, key, algorithm=jwk["alg"], headers={"kid": jwk["kid"]})


class HumanVerifier:
    """Verifies human users' bearer tokens against the dev key or an OIDC JWKS."""

    def __init__(
        self,
        *,
        audience: str,
        dev_key: PrivateKey | None = None,
        jwks_url: str = "",
        issuer: str = "",
        leeway_s: int = 30,
    ) -> None:
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s
        self._dev_jwk = public_jwk(dev_key) if dev_key is not None else None
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None

    def verify(self, token: str, *, now: float | None = None) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("malformed bearer token", code="malformed_token") from exc
        alg = header.get("alg")
        if alg not in ("EdDSA", "ES256", "RS256", "PS256"):
            raise AuthError(f"algorithm {alg!r} is not accepted", code="bad_algorithm")
        key: Any
        issuer: str
        if self._dev_jwk is not None and header.get("kid") == self._dev_jwk["kid"]:
            key, key_alg = public_key_from_jwk(self._dev_jwk)
            issuer = DEV_ISSUER
            if alg != key_alg:
                raise AuthError("algorithm does not fit the key", code="bad_algorithm")
        elif self._jwks is not None:
            try:
                key = self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWTError as exc:
                raise AuthError("signing key not found at the issuer", code="unknown_key") from exc
            issuer = self.issuer
        else:
            raise AuthError("no issuer trusts this token", code="unknown_key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(alg)],
                audience=self.audience,
                issuer=issuer or None,
                leeway=self.leeway_s,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"bearer token rejected: {exc}", code="invalid_token") from exc
        roles = claims.get("roles", [])
        if not isinstance(roles, list):
            raise AuthError("roles claim must be a list", code="invalid_token")
        dept = claims.get("department")
        return Principal(
            subject=str(claims["sub"]),
            roles=frozenset(str(r) for r in roles if r in ROLES),
            department=str(dept) if dept else None,
        )
