"""Attacks and bad input against a running gateway over HTTP, one named test each.

Every refusal is RFC 9457 problem+json with a stable code, carries an exchange id
once the request reached the exchange flow, releases no data, and leaves the
audit log verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa

from examples.launch import Departments
from gateway.auth.requests import TOKEN_TYPE
from gateway.jose import generate_private_key, public_jwk
from tests._support.gateway import Gateway, start_gateway, stop
from tests.exchange.attack_support import (
    PATH,
    SUBJECT,
    SlowHandler,
    audit_store_refusing,
    b64url,
    expect_problem,
    good_token,
    key_id,
    post_exchange,
    prepare_attack_gateway,
    request_body,
    sign_token,
    token_claims,
)
from tests.exchange.conftest import STORES, gateway_on_store


@pytest.fixture(scope="module")
def slow_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module", params=STORES)
def gw(
    request: pytest.FixtureRequest,
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
    slow_server: str,
) -> Iterator[Gateway]:
    """Every attack against the embedded store and against PostgreSQL: the two run
    admission differently (on the loop holding SQLite's turn; awaited statements)."""
    data = tmp_path_factory.mktemp("gw-attacks")
    with gateway_on_store(
        request,
        departments,
        data,
        prepare=prepare_attack_gateway(slow_server),
        extra_env={"ACCORD_MAX_BODY_BYTES": "65536"},
    ) as g:
        yield g


# -- tokens ---------------------------------------------------------------------------


def test_missing_token_rejected(gw: Gateway) -> None:
    expect_problem(post_exchange(gw, None, request_body()), 401, "missing_token")


def test_alg_none_rejected(gw: Gateway) -> None:
    body = request_body()
    header = {"alg": "none", "typ": TOKEN_TYPE, "kid": key_id(gw.key("welfare-office"))}
    token = (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(token_claims(body)).encode())}."
    )
    expect_problem(post_exchange(gw, token, body), 401, "bad_algorithm")


def test_hs256_key_confusion_rejected(gw: Gateway) -> None:
    body = request_body()
    key = gw.key("welfare-office")
    jwk = public_jwk(key)
    header = {"alg": "HS256", "typ": TOKEN_TYPE, "kid": jwk["kid"]}
    signing_input = (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(token_claims(body)).encode())}"
    )
    secret = json.dumps(jwk).encode()  # the public key used as an HMAC secret
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    expect_problem(post_exchange(gw, f"{signing_input}.{b64url(sig)}", body), 401, "bad_algorithm")


def test_unknown_kid_rejected(gw: Gateway) -> None:
    body = request_body()
    expect_problem(
        post_exchange(gw, sign_token(generate_private_key("EdDSA"), token_claims(body)), body),
        401,
        "unknown_key",
    )


def test_forged_signature_rejected(gw: Gateway) -> None:
    body = request_body()
    stranger = generate_private_key("EdDSA")
    token = sign_token(stranger, token_claims(body), kid=key_id(gw.key("welfare-office")))
    expect_problem(post_exchange(gw, token, body), 401, "signature_invalid")


def test_revoked_key_rejected(gw: Gateway) -> None:
    key = generate_private_key("EdDSA")
    r = httpx.post(
        f"{gw.url}/v1/departments/welfare-office/keys",
        json={"jwk": public_jwk(key)},
        headers=gw.staff(),
    )
    assert r.status_code == 201, r.text
    body = request_body()
    assert post_exchange(gw, sign_token(key, token_claims(body)), body).status_code == 200
    r = httpx.post(
        f"{gw.url}/v1/keys/{key_id(key)}/revoke", json={"reason": "laptop lost"}, headers=gw.staff()
    )
    assert r.status_code == 200, r.text
    expect_problem(post_exchange(gw, sign_token(key, token_claims(body)), body), 401, "key_revoked")


def test_expired_key_rejected(gw: Gateway) -> None:
    key = generate_private_key("EdDSA")
    now = datetime.now(UTC)
    r = httpx.post(
        f"{gw.url}/v1/departments/welfare-office/keys",
        json={
            "jwk": public_jwk(key),
            "not_before": (now - timedelta(days=2)).isoformat(),
            "not_after": (now - timedelta(days=1)).isoformat(),
        },
        headers=gw.staff(),
    )
    assert r.status_code == 201, r.text
    body = request_body()
    expect_problem(post_exchange(gw, sign_token(key, token_claims(body)), body), 401, "key_expired")


def test_expired_token_rejected(gw: Gateway) -> None:
    body = request_body()
    now = int(time.time())
    token = sign_token(gw.key("welfare-office"), token_claims(body, iat=now - 400, exp=now - 200))
    expect_problem(post_exchange(gw, token, body), 401, "token_expired")


def test_not_yet_valid_token_rejected(gw: Gateway) -> None:
    body = request_body()
    now = int(time.time())
    token = sign_token(gw.key("welfare-office"), token_claims(body, iat=now + 120, exp=now + 180))
    expect_problem(post_exchange(gw, token, body), 401, "token_not_yet_valid")


def test_far_future_token_rejected(gw: Gateway) -> None:
    body = request_body()
    now = int(time.time())
    token = sign_token(gw.key("welfare-office"), token_claims(body, exp=now + 86_400))
    expect_problem(post_exchange(gw, token, body), 401, "token_lifetime_too_long")


def test_wrong_audience_rejected(gw: Gateway) -> None:
    body = request_body()
    token = sign_token(gw.key("welfare-office"), token_claims(body, aud="another-gateway"))
    expect_problem(post_exchange(gw, token, body), 401, "wrong_audience")


def test_replayed_jti_rejected(gw: Gateway) -> None:
    body = request_body()
    token = good_token(gw, body)
    assert post_exchange(gw, token, body).status_code == 200
    problem = expect_problem(post_exchange(gw, token, body), 401, "token_replayed")
    # Audited as the authentication failure it is, naming whose token came again.
    engine = sa.create_engine(gw.env["ACCORD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT data FROM audit_entries WHERE exchange_id = :id"),
                {"id": problem["exchange_id"]},
            ).all()
    finally:
        engine.dispose()
    entries = [json.loads(bytes(r[0])) for r in rows]
    assert [(e["event"], e["outcome"], e["problem"]) for e in entries] == [
        ("auth_failure", "refused", "token_replayed")
    ]
    assert entries[0]["actor"] == "welfare-office/benefits-app"


def test_a_token_for_a_receipt_is_single_use_too(gw: Gateway) -> None:
    """The receipt route spends its token's jti as the exchange route does."""
    body = request_body()
    r = post_exchange(gw, good_token(gw, body), body)
    assert r.status_code == 200
    path = f"/v1/exchanges/{r.json()['exchange_id']}/receipt"
    token = sign_token(gw.key("welfare-office"), token_claims(b"", htm="GET", htu=path))
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(gw.url + path, headers=headers, timeout=30).status_code == 200
    again = httpx.get(gw.url + path, headers=headers, timeout=30)
    expect_problem(again, 401, "token_replayed")


def test_replayed_jti_rejected_across_gateway_processes(gw: Gateway) -> None:
    url, proc = start_gateway(gw.env, gw.data_dir)
    try:
        body = request_body()
        token = good_token(gw, body)
        assert post_exchange(gw, token, body).status_code == 200
        r = httpx.post(
            url + PATH,
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        expect_problem(r, 401, "token_replayed")
    finally:
        stop(proc)


def test_body_changed_after_signing_rejected(gw: Gateway) -> None:
    body = request_body()
    token = good_token(gw, body)
    expect_problem(
        post_exchange(gw, token, request_body(purpose="benefit-eligibility ")), 401, "body_mismatch"
    )


def test_method_path_mismatch_rejected(gw: Gateway) -> None:
    body = request_body()
    token = sign_token(gw.key("welfare-office"), token_claims(body, htu="/v1/other"))
    expect_problem(post_exchange(gw, token, body), 401, "token_request_mismatch")


# -- bodies ---------------------------------------------------------------------------


def test_oversized_body_rejected(gw: Gateway) -> None:
    body = b'{"pad": "' + b"x" * 100_000 + b'"}'
    expect_problem(post_exchange(gw, good_token(gw, body), body), 413, "body_too_large")


def test_malformed_json_rejected(gw: Gateway) -> None:
    body = b'{"agreement": "welfare-person-lookup", '
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 400, "malformed_json")
    assert doc["exchange_id"]


def test_schema_violation_names_the_field(gw: Gateway) -> None:
    body = request_body(query={"kind": "record", "subject": "1; DROP TABLE citizen"})
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 422, "validation_failed")
    assert any("subject" in e["field"] for e in doc["errors"])


@pytest.mark.parametrize("version", [True, "1", 1.0])
def test_an_agreement_version_that_is_not_an_integer_is_refused_not_coerced(
    gw: Gateway, version: object
) -> None:
    body = request_body(agreement_version=version)
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 422, "validation_failed")
    assert any("agreement_version" in e["field"] for e in doc["errors"])


def test_wrong_content_type_rejected(gw: Gateway) -> None:
    body = request_body()
    r = httpx.post(
        gw.url + PATH,
        content=body,
        headers={"Authorization": f"Bearer {good_token(gw, body)}", "Content-Type": "text/plain"},
    )
    expect_problem(r, 415, "unsupported_media_type")


def test_nul_characters_refused_on_every_route(gw: Gateway) -> None:
    """PostgreSQL cannot hold U+0000 in text and SQLite can: refused alike, at the edge."""
    body = request_body(query={"kind": "verify", "predicate": "given_name == 'a\x00'"})
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 422, "validation_failed")
    assert doc["exchange_id"] and "NUL" in doc["detail"]  # refused by the flow: audited
    admin = gw.staff()
    for url, params in (
        ("/v1/agreements", {"department": "\x00"}),
        ("/v1/departments/welfare%00office", None),
    ):
        r = httpx.get(gw.url + url, params=params, headers=admin)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "validation_failed"
    # The literal text "\\u0000" is not a NUL: that exchange goes on to its own answer.
    body = request_body(query={"kind": "verify", "predicate": "given_name == '\\u0000'"})
    r = post_exchange(gw, good_token(gw, body), body)
    assert "NUL" not in r.text


# -- the agreement --------------------------------------------------------------------


def test_another_departments_agreement_refused(gw: Gateway) -> None:
    body = request_body()
    claims = token_claims(body, iss="tax-authority", sub="tax-status-service")
    token = sign_token(gw.key("tax-authority"), claims)
    doc = expect_problem(post_exchange(gw, token, body), 403, "policy_denied")
    assert "wrong_consumer" in [r["code"] for r in doc["reasons"]]


def test_field_outside_agreement_refused(gw: Gateway) -> None:
    body = request_body(fields=["given_name", "address_street"])
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 403, "policy_denied")
    assert "field_not_permitted" in [r["code"] for r in doc["reasons"]]


def test_purpose_outside_agreement_refused(gw: Gateway) -> None:
    body = request_body(purpose="marketing")
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 403, "policy_denied")
    assert [r["code"] for r in doc["reasons"]] == ["purpose_not_permitted"]


def test_classification_above_ceiling_refused(gw: Gateway) -> None:
    """A field the agreement permits but classified above its ceiling (and the
    caller's clearance) is refused for that."""
    body = request_body(
        agreement="welfare-tax-income",
        dataset="tax-status",
        fields=["assessed_income"],
    )
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 403, "policy_denied")
    codes = {r["code"] for r in doc["reasons"]}
    assert {"classification_exceeds_ceiling", "clearance_insufficient"} <= codes
    assert "field_not_permitted" not in codes


def test_field_outside_the_agreement_refused_for_that_alone(gw: Gateway) -> None:
    """A restricted field the agreement does not list: refused as not permitted,
    with no second reason about a level the agreement never granted."""
    body = request_body(
        agreement="welfare-tax-status",
        dataset="tax-status",
        fields=["assessed_income"],
    )
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 403, "policy_denied")
    assert [r["code"] for r in doc["reasons"]] == ["field_not_permitted"]


def test_suspension_on_another_node_stops_this_node_at_once(gw: Gateway) -> None:
    body_doc = {"agreement": "welfare-suspend", "fields": ["given_name"]}
    body = request_body(**body_doc)
    assert (
        post_exchange(gw, good_token(gw, body), body).status_code == 200
    )  # this node has it cached
    url, proc = start_gateway(gw.env, gw.data_dir)
    try:
        r = httpx.post(
            f"{url}/v1/agreements/welfare-suspend/versions/1/status",
            json={"status": "suspended", "reason": "investigation"},
            headers=gw.staff(),
        )
        assert r.status_code == 200, r.text
    finally:
        stop(proc)
    body = request_body(**body_doc)
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 403, "policy_denied")
    assert [r["code"] for r in doc["reasons"]] == ["agreement_inactive"]


def test_quota_exhausted_refused(gw: Gateway) -> None:
    body_doc = {"agreement": "welfare-quota", "fields": ["given_name"]}
    for _ in range(2):
        body = request_body(**body_doc)
        assert post_exchange(gw, good_token(gw, body), body).status_code == 200
    body = request_body(**body_doc)
    doc = expect_problem(post_exchange(gw, good_token(gw, body), body), 403, "policy_denied")
    assert "quota_exceeded" in [r["code"] for r in doc["reasons"]]


# -- faults ---------------------------------------------------------------------------


def test_provider_down_releases_nothing(gw: Gateway) -> None:
    body = request_body(agreement="welfare-person-down", dataset="person-down")
    doc = expect_problem(
        post_exchange(gw, good_token(gw, body), body), 502, "connector_unavailable"
    )
    assert doc["exchange_id"]


def test_provider_slow_times_out(gw: Gateway) -> None:
    body = request_body(agreement="welfare-person-slow", dataset="person-slow")
    expect_problem(post_exchange(gw, good_token(gw, body), body), 504, "connector_timeout")


def test_audit_database_unavailable_releases_nothing(gw: Gateway) -> None:
    with audit_store_refusing(gw):
        body = request_body()
        r = post_exchange(gw, good_token(gw, body), body)
        expect_problem(r, 503, "audit_unavailable")
        assert "Rossi" not in r.text and SUBJECT not in r.text
    body = request_body()
    assert post_exchange(gw, good_token(gw, body), body).status_code == 200


def test_log_verifies_after_the_attacks(gw: Gateway) -> None:
    out = gw.audit_cli("verify")
    assert out.returncode == 0, out.stdout + out.stderr
