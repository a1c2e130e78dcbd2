"""Department systems authenticate each exchange with a single-use request token.

Profile (docs/exchange.md): JWS compact, header ``typ: accord-req+jwt``,
``alg`` EdDSA or ES256, ``kid`` of a registered key of the ``iss`` department;
claims ``iss``, ``sub`` (a registered system), ``aud`` (this gateway), ``iat``,
``exp`` (at most five minutes after ``iat``), ``jti`` (single use), ``htm``,
``htu`` and ``bsh`` (base64url SHA-256 of the body) bind it to one request.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from gateway.errors import AccordError, AuthError
from gateway.jose import ALGORITHMS, PrivateKey, b64url_encode, public_jwk
from gateway.registry.callers import CallerRows, verify_caller
from gateway.registry.models import System
from gateway.registry.service import RegistryService
from gateway.statecache import StateCache

__all__ = [
    "MAX_LIFETIME_S",
    "TOKEN_TYPE",
    "Caller",
    "RequestTokenVerifier",
    "body_hash",
    "sign_request_token",
]

TOKEN_TYPE = "accord-req+jwt"  # noqa: S105 - a media type, not a secret
MAX_LIFETIME_S = 300
LEEWAY_S = 30
REQUIRED = ["iss", "sub", "aud", "iat", "exp", "jti", "htm", "htu", "bsh"]

#: Remembers a jti until its expiry; raises AuthError(token_replayed) on a second use.
ReplayGuard = Callable[[str, str, datetime], None]


def body_hash(body: bytes) -> str:
    return b64url_encode(hashlib.sha256(body).digest())


@dataclass(frozen=True)
class Caller:
    department: str
    system: str
    kid: str
    jti: str
    capabilities: frozenset[str]
    replay_until: datetime

    @property
    def actor(self) -> str:
        return f"system:{self.department}/{self.system}"


def sign_request_token(
    key: PrivateKey,
    *,
    department: str,
    system: str,
    audience: str,
    method: str,
    path: str,
    body: bytes,
    now: float | None = None,
    lifetime_s: int = 60,
    jti: str | None = None,
) -> str:
    """Sign a token for exactly one request (what the Python client does)."""
    issued = int(now if now is not None else time.time())
    jwk = public_jwk(key)
    claims = {
        "iss": department,
        "sub": system,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": jti or uuid.uuid4().hex,
        "htm": method.upper(),
        "htu": path,
        "bsh": body_hash(body),
    }
    return jwt.encode(
        claims, key, algorithm=jwk["alg"], headers={"typ": TOKEN_TYPE, "kid": jwk["kid"]}
    )


class RequestTokenVerifier:
    def __init__(self, registry: RegistryService, *, audience: str, replay: ReplayGuard) -> None:
        self.registry = registry
        self.audience = audience
        self.replay = replay

    def verify(
        self,
        token: str,
        *,
        method: str,
        path: str,
        body: bytes,
        now: datetime,
        defer_replay: bool = False,
        state: dict[Hashable, Any] | None = None,
    ) -> Caller:
        """Raise ``AuthError`` with a precise code unless the token is good for this request.

        With ``defer_replay`` the caller must itself record ``(iss, jti)`` until
        ``Caller.replay_until`` before acting on the request (the exchange does
        it in the same transaction that reserves its quota). ``state`` is a
        ``StateCache`` generation to read the registry rows from.
        """
        try:
            # The token's only parse (each parse checks every character in Python):
            # header and claims find the key; the signature and claims are checked
            # below on what this parse returned, never on a second reading.
            parts = jwt.decode_complete(token, options={"verify_signature": False})
            header: dict[str, Any] = parts["header"]
            unverified: dict[str, Any] = parts["payload"]
        except jwt.PyJWTError as exc:
            raise AuthError(
                "the request token is not a JWS compact token", code="malformed_token"
            ) from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ("EdDSA", "ES256"):
            raise AuthError(
                f"algorithm {alg!r} is not accepted; use EdDSA or ES256", code="bad_algorithm"
            )
        if header.get("typ") != TOKEN_TYPE:
            raise AuthError(f"token typ must be {TOKEN_TYPE}", code="wrong_token_type")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token header lacks kid", code="unknown_key")
        iss = unverified.get("iss")
        if not isinstance(iss, str):
            raise AuthError("token lacks iss", code="invalid_token")
        sub = str(unverified.get("sub"))
        try:
            if state is None:
                rows = self.registry.caller_rows(kid, iss, sub)
            else:
                rows = StateCache.get(
                    state,
                    ("caller", kid, iss, sub),
                    lambda: self.registry.caller_rows(kid, iss, sub),
                    keep=CallerRows.whole,
                )
            key, key_alg, system = verify_caller(rows, now)
        except AccordError as exc:
            raise AuthError(exc.detail, code=exc.code) from exc
        if key_alg != alg:
            raise AuthError("algorithm does not fit the key", code="bad_algorithm")
        try:
            claims = self._verify_at(token, parts, key, alg, now)
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the request token has expired", code="token_expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError(
                "the request token is not valid yet", code="token_not_yet_valid"
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("the token is for another gateway", code="wrong_audience") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(str(exc), code="missing_claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError(
                "the token signature does not verify", code="signature_invalid"
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"the request token is invalid: {exc}", code="invalid_token") from exc
        iat, exp = claims["iat"], claims["exp"]
        if not _numeric_date(iat) or not _numeric_date(exp):
            raise AuthError("iat and exp must be integers", code="invalid_token")
        if exp - iat > MAX_LIFETIME_S or exp <= iat:
            raise AuthError(
                f"token lifetime must be at most {MAX_LIFETIME_S}s", code="token_lifetime_too_long"
            )
        if iat > now.timestamp() + LEEWAY_S:
            raise AuthError("token issued in the future", code="token_not_yet_valid")
        if claims["htm"] != method.upper() or claims["htu"] != path:
            raise AuthError(
                "the token was made for another method or path", code="token_request_mismatch"
            )
        if claims["bsh"] != body_hash(body):
            raise AuthError("the body does not match the token's bsh", code="body_mismatch")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
            raise AuthError("jti must be a string of 8 to 128 characters", code="invalid_token")
        if system is None:
            raise AuthError(f"unknown system {sub!r} of {iss!r}", code="unknown_system")
        _verify_system_key(rows, system)
        expires = datetime.fromtimestamp(exp + LEEWAY_S, UTC)
        if not defer_replay:
            self.replay(iss, jti, expires)
        return Caller(
            department=iss,
            system=system.system_id,
            kid=kid,
            jti=jti,
            capabilities=frozenset(system.capabilities),
            replay_until=expires,
        )

    def _verify_at(
        self, token: str, parts: dict[str, Any], key: Any, alg: str, now: datetime
    ) -> dict[str, Any]:
        """Verify signature, audience and required claims; time checks use ``now``, not the
        library's clock, so validity is evaluated at an injected time like everywhere else."""
        claims = _verified_claims(token, parts, key, alg, audience=self.audience)
        ts = now.timestamp()
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool) and ts > exp + LEEWAY_S:
            raise jwt.ExpiredSignatureError("expired")
        if "nbf" in claims:
            nbf = claims["nbf"]
            if not _numeric_date(nbf):
                raise jwt.InvalidTokenError("nbf must be an integer NumericDate")
            if ts + LEEWAY_S < nbf:
                raise jwt.ImmatureSignatureError("not yet valid")
        return claims


def _verify_system_key(rows: CallerRows, system: System) -> None:
    """Raise unless the key may sign for ``system``: a key bound to a system signs
    only for it, and a system with capabilities takes only keys bound to it.

    Without this, any system holding the department's key could name another
    system of the department as ``sub`` and take its capabilities. Checked after
    the signature, so an unsigned token learns nothing about which key is whose.
    """
    bound = rows.key.system_id if rows.key is not None else None
    if bound is not None and bound != system.system_id:
        raise AuthError(
            f"key {rows.kid} is bound to system {bound!r}, not {system.system_id!r}",
            code="wrong_system_key",
        )
    if system.capabilities and bound != system.system_id:
        raise AuthError(
            f"system {system.system_id!r} has capabilities and signs only with a key bound to it",
            code="wrong_system_key",
        )


def _numeric_date(value: Any) -> bool:
    """An integer NumericDate: ``true`` is an ``int`` to Python, not to JSON."""
    return type(value) is int


def _verified_claims(
    token: str, parts: dict[str, Any], key: Any, alg: str, *, audience: str
) -> dict[str, Any]:
    """The claims of ``parts`` (``jwt.decode_complete`` of ``token`` without verification)
    once their signature and claims are good, raising what ``jwt.decode`` would.

    Returns or raises as ``jwt.decode(token, key, algorithms=[alg], audience=audience,
    options={"require": REQUIRED, "verify_exp": False, "verify_iat": False,
    "verify_nbf": False})`` does, without parsing the token a second time (a parse
    costs as much as a third of the signature check). The signature goes through
    PyJWT's own algorithm object and key preparation, over the bytes ``jwt.decode``
    verifies: the token up to its last dot (the parse refused any other shape).
    ``alg`` is the key's registered algorithm; the header must name it.
    """
    if alg not in ALGORITHMS or parts["header"].get("alg") != alg:
        raise jwt.InvalidAlgorithmError("The specified alg value is not allowed")
    algorithm = jwt.get_algorithm_by_name(alg)
    signing_input = token.encode("utf-8").rsplit(b".", 1)[0]
    if not algorithm.verify(signing_input, algorithm.prepare_key(key), parts["signature"]):
        raise jwt.InvalidSignatureError("Signature verification failed")
    claims: dict[str, Any] = parts["payload"]
    for name in REQUIRED:
        if claims.get(name) is None:
            raise jwt.MissingRequiredClaimError(name)
    _verify_audience(claims["aud"], audience)
    if not isinstance(claims["sub"], str):
        raise InvalidSubjectError("Subject must be a string")
    if not isinstance(claims["jti"], str):
        raise InvalidJTIError("JWT ID must be a string")
    return claims


def _verify_audience(aud: Any, audience: str) -> None:
    """PyJWT's audience rule: ``aud`` is one string or a list of strings naming us.

    An empty ``aud`` counts as missing; a list holding anything but strings is
    refused even when it names us.
    """
    if not aud:
        raise jwt.MissingRequiredClaimError("aud")
    named = [aud] if isinstance(aud, str) else aud
    if not isinstance(named, list) or not all(isinstance(entry, str) for entry in named):
        raise jwt.InvalidAudienceError("Invalid claim format in token")
    if audience not in named:
        raise jwt.InvalidAudienceError("Audience doesn't match")
