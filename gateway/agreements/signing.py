"""Signing and verifying agreements as JWS General JSON over the JCS terms."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.agreements.terms import AgreementTerms
from gateway.errors import AccordError, SignatureError, ValidationFailed
from gateway.jose import PrivateKey, PublicKey, public_jwk
from gateway.jose.jws import GeneralJWS, sign_general

__all__ = [
    "KeyResolver",
    "SignatureStatus",
    "VerifiedAgreement",
    "sign_agreement",
    "verify_agreement",
    "verify_agreement_report",
]

PARTIES = ("provider", "consumer", "authority")
#: Looks up the public key for (kid, department) valid now and at signing time.
_LEEWAY = timedelta(seconds=60)
KeyResolver = Callable[[str, str, datetime, datetime], tuple[PublicKey, str]]


@dataclass(frozen=True)
class SignatureStatus:
    index: int
    party: str
    kid: str
    alg: str
    signed_at: datetime | None
    ok: bool
    code: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "party": self.party,
            "kid": self.kid,
            "alg": self.alg,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
            "ok": self.ok,
            "code": self.code,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class VerifiedAgreement:
    terms: AgreementTerms
    jws: GeneralJWS
    signatures: tuple[SignatureStatus, ...]


def sign_agreement(
    signed: GeneralJWS | dict[str, Any],
    key: PrivateKey,
    *,
    party: str,
    terms: AgreementTerms | None = None,
    now: datetime | None = None,
) -> GeneralJWS:
    """Add ``party``'s signature. Start from terms (``terms=...``) or an existing JWS."""
    if party not in PARTIES:
        raise ValidationFailed(f"party must be one of {PARTIES}", code="bad_party")
    jws = GeneralJWS.from_json(signed) if isinstance(signed, dict) else signed
    if terms is not None and not jws.signatures:
        jws = sign_general(terms.canonical())
    for entry in jws.signatures:
        if entry.header.get("party") == party:
            raise ValidationFailed(f"{party} has already signed", code="duplicate_signature")
    when = now or datetime.now(UTC)
    header = {
        "kid": public_jwk(key)["kid"],
        "party": party,
        "iat": int(when.timestamp()),
        "typ": "accord-agreement+jws",
    }
    return jws.with_signature(key, header)


def _terms_of(jws: GeneralJWS) -> AgreementTerms:
    try:
        doc = json.loads(jws.payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureError("payload is not JSON", code="malformed_jws") from exc
    terms = AgreementTerms.from_json(doc)
    if terms.canonical() != jws.payload:
        raise SignatureError(
            "payload is not the RFC 8785 canonical form of the terms", code="payload_not_canonical"
        )
    return terms


def verify_agreement_report(
    doc: Any, resolve: KeyResolver, now: datetime
) -> tuple[AgreementTerms, GeneralJWS, list[SignatureStatus]]:
    """Check each signature and say why it failed, without raising on the first."""
    jws = GeneralJWS.from_json(doc)
    terms = _terms_of(jws)
    statuses: list[SignatureStatus] = []
    seen: set[str] = set()
    for i, entry in enumerate(jws.signatures):
        party = str(entry.header.get("party", ""))
        iat = entry.header.get("iat")
        signed_at = datetime.fromtimestamp(iat, UTC) if isinstance(iat, int) else None
        code, detail = "ok", "signature verified"
        try:
            if party not in PARTIES:
                raise SignatureError(f"unknown party {party!r}", code="bad_party")
            if party in seen:
                raise SignatureError(f"{party} signed twice", code="duplicate_signature")
            seen.add(party)
            if party not in terms.required_parties:
                raise SignatureError(f"{party} is not a required party", code="unexpected_party")
            dept = terms.party_department(party)
            if dept is None:
                raise SignatureError(f"no department named for {party}", code="bad_party")
            if signed_at is None:
                raise SignatureError("protected header lacks iat", code="missing_signing_time")
            if signed_at > now.replace(microsecond=0) + _LEEWAY:
                raise SignatureError("signed in the future", code="signed_in_future")
            key, _alg = resolve(entry.kid, dept, now, signed_at)
            entry.verify(jws.payload_b64, key)
        except AccordError as exc:
            code, detail = exc.code, exc.detail
        statuses.append(
            SignatureStatus(i, party, entry.kid, entry.alg, signed_at, code == "ok", code, detail)
        )
    return terms, jws, statuses


def verify_agreement(doc: Any, resolve: KeyResolver, now: datetime) -> VerifiedAgreement:
    """Raise unless every required party signed exactly once with a good key."""
    terms, jws, statuses = verify_agreement_report(doc, resolve, now)
    bad = [s for s in statuses if not s.ok]
    if bad:
        raise SignatureError(
            f"signature {bad[0].index} ({bad[0].party or '?'}): {bad[0].detail}",
            code=bad[0].code,
            extra={"signatures": [s.to_json() for s in statuses]},
        )
    signed = {s.party for s in statuses}
    missing = [p for p in terms.required_parties if p not in signed]
    if missing:
        raise SignatureError(
            f"missing signature of {', '.join(missing)}",
            code="missing_signature",
            extra={"signatures": [s.to_json() for s in statuses]},
        )
    return VerifiedAgreement(terms, jws, tuple(statuses))
