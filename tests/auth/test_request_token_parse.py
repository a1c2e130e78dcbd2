"""Request tokens are parsed once; their signature and claims must still be checked
exactly as PyJWT's own ``jwt.decode`` checks them.

Named tests for each shortcut that would go wrong (a payload changed after signing,
another key's signature, ``aud`` lists, missing or null claims), and properties
that the verifier and ``jwt.decode`` agree on every claim set hypothesis makes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.types import Options

from gateway.auth.requests import (
    REQUIRED,
    TOKEN_TYPE,
    RequestTokenVerifier,
    _verified_claims,
    body_hash,
)
from gateway.errors import AuthError
from gateway.jose import PrivateKey, PublicKey, b64url_encode, generate_private_key, public_jwk
from gateway.registry.models import DepartmentCreate, KeyCreate, SystemCreate
from tests.gateway.conftest import T0, Clock, make_services

AUD = "gw-parse-test"
DEPT = "dept-parse"
SYSTEM = "caller"
METHOD, PATH, BODY = "POST", "/v1/exchange/person-lookup", b'{"subject":"p-1"}'
ALGS = ("EdDSA", "ES256")
#: What the verifier asked ``jwt.decode`` for before it parsed tokens once.
PYJWT_OPTIONS: Options = {
    "require": REQUIRED,
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
}
ABSENT: Any = object()
#: Unregistered keys whose signatures must never verify under a registered kid.
STRANGERS = {alg: generate_private_key(alg) for alg in ALGS}
#: Keys for the comparison that needs no registry.
SIGNERS = {alg: generate_private_key(alg) for alg in ALGS}


def unused_replay(*_: object) -> None:
    raise AssertionError("these tests defer the replay check")


@dataclass
class Registered:
    verifier: RequestTokenVerifier
    keys: dict[str, PrivateKey]
    state: dict[Hashable, Any] = field(default_factory=dict)

    def refusal(self, token: str, *, cached: bool = True) -> tuple[str, str] | None:
        """The verifier's code and detail, or ``None`` when it accepts the token."""
        state = self.state if cached else None
        try:
            self.verifier.verify(
                token, method=METHOD, path=PATH, body=BODY, now=T0, defer_replay=True, state=state
            )
        except AuthError as exc:
            return exc.code, exc.detail
        return None

    def code(self, token: str, *, cached: bool = True) -> str | None:
        refused = self.refusal(token, cached=cached)
        return None if refused is None else refused[0]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    data = tmp_path_factory.mktemp("request-tokens")
    services = make_services(f"sqlite:///{data / 'accord.db'}", data, Clock())
    registry = services.registry
    registry.register_department(
        DepartmentCreate(id=DEPT, name="Parse", clearance="internal", caveats=[]), actor="test"
    )
    registry.add_system(DEPT, SystemCreate(system_id=SYSTEM), actor="test")
    keys = {alg: generate_private_key(alg) for alg in ALGS}
    for key in keys.values():
        registry.add_key(
            DEPT, KeyCreate(jwk=public_jwk(key), not_before=T0 - timedelta(days=1)), actor="test"
        )
    yield Registered(RequestTokenVerifier(registry, audience=AUD, replay=unused_replay), keys)
    services.close()


def good_claims() -> dict[str, Any]:
    issued = int(T0.timestamp())
    return {
        "iss": DEPT,
        "sub": SYSTEM,
        "aud": AUD,
        "iat": issued,
        "exp": issued + 60,
        "jti": "jti-0123456789",
        "htm": METHOD,
        "htu": PATH,
        "bsh": body_hash(BODY),
    }


def b64json(value: Any, **dumps: Any) -> str:
    return b64url_encode(json.dumps(value, **dumps).encode())


def sign(
    claims: dict[str, Any],
    key: PrivateKey,
    *,
    kid_of: PrivateKey | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    """A compact token over any claims (``jwt.encode`` refuses some that attackers send)."""
    headers = {"typ": TOKEN_TYPE, "kid": public_jwk(kid_of or key)["kid"], **(header or {})}
    return jwt.PyJWS().encode(
        json.dumps(claims).encode(), key, algorithm=public_jwk(key)["alg"], headers=headers
    )


def with_payload(token: str, claims: dict[str, Any]) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{b64json(claims)}.{sig}"


def public(key: PrivateKey) -> PublicKey:
    return key.public_key()


# -- named attacks and edge cases ---------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_good_token_accepted_from_cache_and_registry(registered: Registered, alg: str) -> None:
    token = sign(good_claims(), registered.keys[alg])
    assert registered.code(token) is None
    assert registered.code(token, cached=False) is None


@pytest.mark.parametrize("alg", ALGS)
def test_payload_modified_after_signing_rejected(registered: Registered, alg: str) -> None:
    token = sign(good_claims(), registered.keys[alg])
    assert registered.code(with_payload(token, {**good_claims(), "htu": "/v1/other"})) == (
        "signature_invalid"
    )


@pytest.mark.parametrize("alg", ALGS)
def test_signature_from_another_key_rejected(registered: Registered, alg: str) -> None:
    token = sign(good_claims(), STRANGERS[alg], kid_of=registered.keys[alg])
    assert registered.code(token) == "signature_invalid"


def test_truncated_es256_signature_rejected(registered: Registered) -> None:
    head, payload, sig = sign(good_claims(), registered.keys["ES256"]).split(".")
    short = b64url_encode(base64.urlsafe_b64decode(sig + "==")[:48])
    assert registered.code(f"{head}.{payload}.{short}") == "signature_invalid"


def test_signing_input_is_the_tokens_own_bytes(registered: Registered) -> None:
    """A header serialised with spaces and another key order still verifies: the
    signature covers the bytes sent, not a re-serialisation of the parsed header."""
    key = registered.keys["EdDSA"]
    jwk = public_jwk(key)
    header = {"kid": jwk["kid"], "typ": TOKEN_TYPE, "alg": "EdDSA"}
    signing_input = f"{b64json(header, indent=1)}.{b64json(good_claims(), indent=2)}"
    signature = jwt.get_algorithm_by_name("EdDSA").sign(signing_input.encode(), key)
    assert registered.code(f"{signing_input}.{b64url_encode(signature)}") is None
    tampered = f"{b64json(header)}.{b64json(good_claims(), indent=2)}"
    assert registered.code(f"{tampered}.{b64url_encode(signature)}") == "signature_invalid"


def test_alg_none_rejected(registered: Registered) -> None:
    jwk = public_jwk(registered.keys["EdDSA"])
    header = {"alg": "none", "typ": TOKEN_TYPE, "kid": jwk["kid"]}
    assert registered.code(f"{b64json(header)}.{b64json(good_claims())}.") == "bad_algorithm"


@pytest.mark.parametrize("alg", ALGS)
def test_hs256_key_confusion_rejected(registered: Registered, alg: str) -> None:
    key = registered.keys[alg]
    pem = public(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": TOKEN_TYPE, "kid": public_jwk(key)["kid"]}
    signing_input = f"{b64json(header)}.{b64json(good_claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert registered.code(f"{signing_input}.{b64url_encode(mac)}") == "bad_algorithm"


def test_header_alg_other_than_the_keys_rejected(registered: Registered) -> None:
    """An ES256 signature presented under the kid of the department's EdDSA key."""
    token = sign(good_claims(), registered.keys["ES256"], kid_of=registered.keys["EdDSA"])
    assert registered.code(token) == "bad_algorithm"


@pytest.mark.parametrize(
    "header",
    [
        {"crit": ["exp"], "exp": 1},
        {"crit": []},
        {"crit": "b64"},
        {"crit": ["b64"]},
        {"crit": ["b64"], "b64": False},
    ],
)
def test_critical_header_extensions_rejected(
    registered: Registered, header: dict[str, Any]
) -> None:
    token = sign(good_claims(), registered.keys["EdDSA"], header=header)
    assert registered.code(token) == "malformed_token"


def test_non_canonical_base64_signature_rejected(registered: Registered) -> None:
    """Ed25519 signatures leave four spare bits in the last character; setting one
    decodes to the same bytes, and must still be refused."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    token = sign(good_claims(), registered.keys["EdDSA"])
    last = alphabet.index(token[-1])
    assert last & 0b1111 == 0
    assert registered.code(token[:-1] + alphabet[last | 1]) == "malformed_token"


@pytest.mark.parametrize(
    ("aud", "code"),
    [
        ([AUD], None),
        (["another-gateway", AUD], None),
        (["another-gateway"], "wrong_audience"),
        ("another-gateway", "wrong_audience"),
        ([AUD, 7], "wrong_audience"),
        ([None, AUD], "wrong_audience"),
        ({"gateway": AUD}, "wrong_audience"),
        (AUD.upper(), "wrong_audience"),
        (f"{AUD}-2", "wrong_audience"),
        ([f"pre-{AUD}"], "wrong_audience"),
        ("", "missing_claim"),
        ([], "missing_claim"),
        (0, "missing_claim"),
    ],
)
def test_audience_rules(registered: Registered, aud: Any, code: str | None) -> None:
    token = sign({**good_claims(), "aud": aud}, registered.keys["EdDSA"])
    assert registered.code(token) == code


@pytest.mark.parametrize("claim", [c for c in REQUIRED if c != "iss"])
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_or_null_required_claim_rejected(
    registered: Registered, claim: str, how: str
) -> None:
    claims = good_claims()
    if how == "absent":
        del claims[claim]
    else:
        claims[claim] = None
    token = sign(claims, registered.keys["ES256"])
    assert registered.refusal(token, cached=False) == (
        "missing_claim",
        f'Token is missing the "{claim}" claim',
    )


@pytest.mark.parametrize(
    ("claim", "value", "why"),
    [("sub", 5, "Subject must be a string"), ("jti", 1234567890123, "JWT ID must be a string")],
)
def test_non_string_sub_or_jti_rejected(
    registered: Registered, claim: str, value: int, why: str
) -> None:
    token = sign({**good_claims(), claim: value}, registered.keys["EdDSA"])
    assert registered.refusal(token) == ("invalid_token", f"the request token is invalid: {why}")


def test_empty_claims_are_present(registered: Registered) -> None:
    """PyJWT counts only null as missing: an empty htu is present, and fails later."""
    token = sign({**good_claims(), "htu": ""}, registered.keys["EdDSA"])
    assert registered.code(token) == "token_request_mismatch"


# -- agreement with jwt.decode --------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
NEAR = int(T0.timestamp())
SPECIFIC: dict[str, st.SearchStrategy[Any]] = {
    "aud": st.sampled_from(
        [[AUD], ["x", AUD], ["x"], "x", [AUD, 1], [AUD, [AUD]], "", [], f"{AUD}-2", [AUD[1:]]]
    ),
    "iat": st.integers(NEAR - 600, NEAR + 600) | st.floats(NEAR - 600, NEAR + 600),
    "exp": st.integers(NEAR - 600, NEAR + 600) | st.just(str(NEAR + 60)),
    "nbf": st.integers(NEAR - 600, NEAR + 600),
    "sub": st.sampled_from([SYSTEM, "other-system", ""]),
    "jti": st.text(min_size=0, max_size=140),
    "iss": st.sampled_from([DEPT, "other-dept"]),
}


def claim_value(name: str) -> st.SearchStrategy[Any]:
    return st.just(ABSENT) | json_values | SPECIFIC.get(name, st.text(max_size=8))


@st.composite
def claim_sets(draw: st.DrawFn, names: tuple[str, ...]) -> dict[str, Any]:
    """The good claims with a few changed, dropped or added (``nbf``)."""
    claims = good_claims()
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        value = draw(claim_value(name))
        if value is ABSENT:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


TAMPERS = ("none", "payload", "stranger", "signature_bit")


def token_for(
    data: st.DataObject, claims: dict[str, Any], key: PrivateKey, alg: str, tamper: str
) -> str:
    if tamper == "payload":
        return with_payload(sign(good_claims(), key), claims)
    if tamper == "stranger":
        return sign(claims, STRANGERS[alg], kid_of=key)
    token = sign(claims, key)
    if tamper == "signature_bit":
        head, payload, sig = token.split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        return f"{head}.{payload}.{b64url_encode(bytes(raw))}"
    return token


def outcome(call: Callable[[], dict[str, Any]]) -> object:
    try:
        return call()
    except jwt.PyJWTError as exc:
        return (type(exc), str(exc))


#: The verifier's code for each exception ``jwt.decode`` raised, checked in this order.
PYJWT_CODES: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token_expired"),
    (jwt.ImmatureSignatureError, "token_not_yet_valid"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "signature_invalid"),
    (jwt.PyJWTError, "invalid_token"),
)
#: Checks of the gateway's own, made after the claims PyJWT checked.
GATEWAY_CODES = {
    "token_expired",
    "token_not_yet_valid",
    "token_lifetime_too_long",
    "invalid_token",
    "token_request_mismatch",
    "body_mismatch",
    "unknown_system",
}


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    alg=st.sampled_from(ALGS),
    expected_alg=st.sampled_from(ALGS),
    tamper=st.sampled_from(TAMPERS),
    claims=claim_sets((*REQUIRED, "nbf")),
)
def test_verified_claims_match_jwt_decode(
    data: st.DataObject, alg: str, expected_alg: str, tamper: str, claims: dict[str, Any]
) -> None:
    """Same claims returned, or the same PyJWT exception with the same message; also
    when the header names another algorithm than the key's."""
    token = token_for(data, claims, SIGNERS[alg], alg, tamper)
    key = public(SIGNERS[expected_alg])
    parts = jwt.decode_complete(token, options={"verify_signature": False})
    ours = outcome(lambda: _verified_claims(token, parts, key, expected_alg, audience=AUD))
    theirs = outcome(
        lambda: jwt.decode(
            token, key, algorithms=[expected_alg], audience=AUD, options=PYJWT_OPTIONS
        )
    )
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    alg=st.sampled_from(ALGS),
    tamper=st.sampled_from(TAMPERS),
    claims=claim_sets(tuple(c for c in (*REQUIRED, "nbf") if c != "iss")),
)
def test_verifier_agrees_with_jwt_decode(
    registered: Registered,
    data: st.DataObject,
    alg: str,
    tamper: str,
    claims: dict[str, Any],
) -> None:
    """Whatever ``jwt.decode`` refuses the verifier refuses with the code it always gave
    that refusal; what the verifier accepts ``jwt.decode`` accepts."""
    key = registered.keys[alg]
    token = token_for(data, claims, key, alg, tamper)
    code = registered.code(token)
    theirs = outcome(
        lambda: jwt.decode(
            token, public(key), algorithms=[alg], audience=AUD, options=PYJWT_OPTIONS
        )
    )
    if isinstance(theirs, tuple):
        assert code == next(c for cls, c in PYJWT_CODES if issubclass(theirs[0], cls))
        return
    assert code is None or code in GATEWAY_CODES
    if tamper != "none":
        assert claims == good_claims() and code is None


# -- what a token can make the gateway keep -----------------------------------------


def test_unknown_kids_systems_and_departments_leave_nothing_in_the_state_cache(
    registered: Registered,
) -> None:
    """Anyone can name a new kid, iss or sub in every token, before any signature is
    checked: a lookup that found no such key, department or system is not kept."""
    state: dict[Hashable, Any] = {}
    stranger = STRANGERS["EdDSA"]
    own = registered.keys["EdDSA"]
    cases = [
        (sign({**good_claims(), "jti": f"jti-unknown-{i}"}, stranger), "unknown_key")
        for i in range(20)
    ]
    cases += [
        (sign({**good_claims(), "sub": f"nobody-{i}"}, own), "unknown_system") for i in range(20)
    ]
    cases += [
        (sign({**good_claims(), "iss": f"dept-{i}"}, own), "wrong_department_key")
        for i in range(20)
    ]
    for token, code in cases:
        assert Registered(registered.verifier, registered.keys, state).code(token) == code
    assert state == {}
    assert (
        Registered(registered.verifier, registered.keys, state).code(sign(good_claims(), own))
        is None
    )
    assert len(state) == 1  # a caller that exists is kept


@pytest.mark.parametrize(
    ("claim", "value"),
    [("nbf", "tomorrow"), ("nbf", {"x": 1}), ("nbf", [1]), ("nbf", True), ("nbf", 1.5)],
)
def test_a_not_before_of_the_wrong_type_is_refused_not_ignored(
    registered: Registered, claim: str, value: Any
) -> None:
    token = sign({**good_claims(), claim: value}, registered.keys["EdDSA"])
    assert registered.code(token) == "invalid_token"


@pytest.mark.parametrize("claim", ["iat", "exp"])
def test_a_boolean_is_not_a_numeric_date(registered: Registered, claim: str) -> None:
    token = sign({**good_claims(), claim: True}, registered.keys["EdDSA"])
    assert registered.code(token) == "invalid_token"


def test_an_integer_not_before_still_works(registered: Registered) -> None:
    issued = int(T0.timestamp())
    key = registered.keys["EdDSA"]
    assert registered.code(sign({**good_claims(), "nbf": issued}, key)) is None
    assert registered.code(sign({**good_claims(), "nbf": issued + 600}, key)) == (
        "token_not_yet_valid"
    )
