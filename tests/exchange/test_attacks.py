"""Attacks and bad input against a running gateway over HTTP, one named test each.

Every refusal is RFC 9457 problem+json with a stable code, carries an exchange id
once the request reached the exchange flow, releases no data, and leaves the
audit log verifiable.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
import yaml

from examples.launch import EXAMPLES, Departments
from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.auth.requests import TOKEN_TYPE, body_hash
from gateway.demo import agreement_doc
from gateway.exchange.models import DatasetBindingCreate
from gateway.jose import PrivateKey, generate_private_key, public_jwk
from gateway.services import Services
from tests._support.gateway import Gateway, add_agreement, running_gateway, start_gateway, stop
from tests._support.servers import fresh_database
from tests.exchange.conftest import subject_with

PATH = "/v1/exchanges"
SUBJECT = subject_with("civil")


def _body(**overrides: Any) -> bytes:
    doc = {
        "agreement": "welfare-person-lookup",
        "dataset": "person",
        "purpose": "benefit-eligibility",
        "query": {"kind": "record", "subject": SUBJECT},
        **overrides,
    }
    return json.dumps(doc).encode()


class _SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(3)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(slow_url: str) -> Any:
    def prepare(services: Services) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        window = (
            (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
            (now + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
        )
        person = {
            "id": "person",
            "model": "person@1",
            "fields": {"given_name": {"operation": "pass"}},
        }
        basis = ("benefit-eligibility", "Social Welfare Act s.12")
        quota = agreement_doc(
            "welfare-quota",
            "t",
            "civil-registry",
            "welfare-office",
            basis,
            "confidential",
            [],
            [person],
            window,
        )
        quota["quotas"] = {"per_minute": 2, "per_day": 100}
        add_agreement(services, quota)
        add_agreement(
            services,
            {**quota, "id": "welfare-suspend", "quotas": {"per_minute": 600, "per_day": 1000}},
        )
        config = yaml.safe_load((EXAMPLES / "civil_registry" / "connector.yaml").read_text())
        spec = yaml.safe_load((EXAMPLES / "civil_registry" / "citizen.mapping.yaml").read_text())
        for dataset, base_url in (
            ("person-down", f"http://127.0.0.1:{_closed_port()}"),
            ("person-slow", slow_url),
        ):
            doc = agreement_doc(
                f"welfare-{dataset}",
                "t",
                "civil-registry",
                "welfare-office",
                basis,
                "confidential",
                [],
                [{**person, "id": dataset}],
                window,
            )
            add_agreement(services, doc)
            services.bindings.put_binding(
                "civil-registry",
                DatasetBindingCreate(
                    dataset_id=dataset,
                    model="person@1",
                    entity="citizen",
                    connector={
                        **config,
                        "base_url": base_url,
                        "retries": {"attempts": 1},
                        "timeouts": {"connect": 0.5, "read": 0.5, "total": 1.0},
                    },
                    mapping=spec,
                ),
                actor="test",
            )

    return prepare


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest,
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
    slow_server: str,
) -> Iterator[Gateway]:
    """Every attack against the embedded store and against PostgreSQL: the two run
    admission differently (on the loop holding SQLite's turn; awaited statements)."""
    data = tmp_path_factory.mktemp("gw-attacks")
    if request.param == "sqlite":
        db_url = f"sqlite:///{data / 'accord.db'}"
    else:
        db_url = fresh_database(request.getfixturevalue("pg_server_url"))
    with running_gateway(
        db_url=db_url,
        data_dir=data,
        departments_env=departments.env,
        prepare=_prepare(slow_server),
        extra_env={"ACCORD_MAX_BODY_BYTES": "65536"},
    ) as g:
        yield g


def _kid(key: PrivateKey) -> str:
    return str(public_jwk(key)["kid"])


def _claims(body: bytes, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "welfare-office",
        "sub": "benefits-app",
        "aud": "accord-gateway",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        "htm": "POST",
        "htu": PATH,
        "bsh": body_hash(body),
        **overrides,
    }


def _sign(key: PrivateKey, claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        claims, key, algorithm="EdDSA", headers={"typ": TOKEN_TYPE, "kid": _kid(key), **header}
    )


def _post(gw: Gateway, token: str | None, body: bytes, path: str = PATH) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(gw.url + path, content=body, headers=headers, timeout=30)


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = r.json()
    assert doc["code"] == code, doc
    assert doc["type"] == f"urn:accord:problem:{code}"
    assert "records" not in r.text and "result" not in doc
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    return doc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _good(gw: Gateway, body: bytes) -> str:
    return _sign(gw.key("welfare-office"), _claims(body))


# -- tokens ---------------------------------------------------------------------------


def test_missing_token_rejected(gw: Gateway) -> None:
    _problem(_post(gw, None, _body()), 401, "missing_token")


def test_alg_none_rejected(gw: Gateway) -> None:
    body = _body()
    header = {"alg": "none", "typ": TOKEN_TYPE, "kid": _kid(gw.key("welfare-office"))}
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(body)).encode())}."
    _problem(_post(gw, token, body), 401, "bad_algorithm")


def test_hs256_key_confusion_rejected(gw: Gateway) -> None:
    body = _body()
    key = gw.key("welfare-office")
    jwk = public_jwk(key)
    header = {"alg": "HS256", "typ": TOKEN_TYPE, "kid": jwk["kid"]}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(body)).encode())}"
    )
    secret = json.dumps(jwk).encode()  # the public key used as an HMAC secret
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    _problem(_post(gw, f"{signing_input}.{_b64(sig)}", body), 401, "bad_algorithm")


def test_unknown_kid_rejected(gw: Gateway) -> None:
    body = _body()
    _problem(
        _post(gw, _sign(generate_private_key("EdDSA"), _claims(body)), body), 401, "unknown_key"
    )


def test_forged_signature_rejected(gw: Gateway) -> None:
    body = _body()
    stranger = generate_private_key("EdDSA")
    token = _sign(stranger, _claims(body), kid=_kid(gw.key("welfare-office")))
    _problem(_post(gw, token, body), 401, "signature_invalid")


def _admin(gw: Gateway) -> dict[str, str]:
    key = dev_issuer_key(gw.data_dir / "keys")
    token = issue_dev_token(key, subject="test-admin", roles=["admin"], audience="accord")
    return {"Authorization": f"Bearer {token}"}


def test_revoked_key_rejected(gw: Gateway) -> None:
    key = generate_private_key("EdDSA")
    r = httpx.post(
        f"{gw.url}/v1/departments/welfare-office/keys",
        json={"jwk": public_jwk(key)},
        headers=_admin(gw),
    )
    assert r.status_code == 201, r.text
    body = _body()
    assert _post(gw, _sign(key, _claims(body)), body).status_code == 200
    r = httpx.post(
        f"{gw.url}/v1/keys/{_kid(key)}/revoke", json={"reason": "laptop lost"}, headers=_admin(gw)
    )
    assert r.status_code == 200, r.text
    _problem(_post(gw, _sign(key, _claims(body)), body), 401, "key_revoked")


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
        headers=_admin(gw),
    )
    assert r.status_code == 201, r.text
    body = _body()
    _problem(_post(gw, _sign(key, _claims(body)), body), 401, "key_expired")


def test_expired_token_rejected(gw: Gateway) -> None:
    body = _body()
    now = int(time.time())
    token = _sign(gw.key("welfare-office"), _claims(body, iat=now - 400, exp=now - 200))
    _problem(_post(gw, token, body), 401, "token_expired")


def test_not_yet_valid_token_rejected(gw: Gateway) -> None:
    body = _body()
    now = int(time.time())
    token = _sign(gw.key("welfare-office"), _claims(body, iat=now + 120, exp=now + 180))
    _problem(_post(gw, token, body), 401, "token_not_yet_valid")


def test_far_future_token_rejected(gw: Gateway) -> None:
    body = _body()
    now = int(time.time())
    token = _sign(gw.key("welfare-office"), _claims(body, exp=now + 86_400))
    _problem(_post(gw, token, body), 401, "token_lifetime_too_long")


def test_wrong_audience_rejected(gw: Gateway) -> None:
    body = _body()
    token = _sign(gw.key("welfare-office"), _claims(body, aud="another-gateway"))
    _problem(_post(gw, token, body), 401, "wrong_audience")


def test_replayed_jti_rejected(gw: Gateway) -> None:
    body = _body()
    token = _good(gw, body)
    assert _post(gw, token, body).status_code == 200
    _problem(_post(gw, token, body), 401, "token_replayed")


def test_replayed_jti_rejected_across_gateway_processes(gw: Gateway) -> None:
    url, proc = start_gateway(gw.env, gw.data_dir)
    try:
        body = _body()
        token = _good(gw, body)
        assert _post(gw, token, body).status_code == 200
        r = httpx.post(
            url + PATH,
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        _problem(r, 401, "token_replayed")
    finally:
        stop(proc)


def test_body_changed_after_signing_rejected(gw: Gateway) -> None:
    body = _body()
    token = _good(gw, body)
    _problem(_post(gw, token, _body(purpose="benefit-eligibility ")), 401, "body_mismatch")


def test_method_path_mismatch_rejected(gw: Gateway) -> None:
    body = _body()
    token = _sign(gw.key("welfare-office"), _claims(body, htu="/v1/other"))
    _problem(_post(gw, token, body), 401, "token_request_mismatch")


# -- bodies ---------------------------------------------------------------------------


def test_oversized_body_rejected(gw: Gateway) -> None:
    body = b'{"pad": "' + b"x" * 100_000 + b'"}'
    _problem(_post(gw, _good(gw, body), body), 413, "body_too_large")


def test_malformed_json_rejected(gw: Gateway) -> None:
    body = b'{"agreement": "welfare-person-lookup", '
    doc = _problem(_post(gw, _good(gw, body), body), 400, "malformed_json")
    assert doc["exchange_id"]


def test_schema_violation_names_the_field(gw: Gateway) -> None:
    body = _body(query={"kind": "record", "subject": "1; DROP TABLE citizen"})
    doc = _problem(_post(gw, _good(gw, body), body), 422, "validation_failed")
    assert any("subject" in e["field"] for e in doc["errors"])


def test_wrong_content_type_rejected(gw: Gateway) -> None:
    body = _body()
    r = httpx.post(
        gw.url + PATH,
        content=body,
        headers={"Authorization": f"Bearer {_good(gw, body)}", "Content-Type": "text/plain"},
    )
    _problem(r, 415, "unsupported_media_type")


# -- the agreement --------------------------------------------------------------------


def test_another_departments_agreement_refused(gw: Gateway) -> None:
    body = _body()
    claims = _claims(body, iss="tax-authority", sub="tax-status-service")
    token = _sign(gw.key("tax-authority"), claims)
    doc = _problem(_post(gw, token, body), 403, "policy_denied")
    assert "wrong_consumer" in [r["code"] for r in doc["reasons"]]


def test_field_outside_agreement_refused(gw: Gateway) -> None:
    body = _body(fields=["given_name", "address_street"])
    doc = _problem(_post(gw, _good(gw, body), body), 403, "policy_denied")
    assert "field_not_permitted" in [r["code"] for r in doc["reasons"]]


def test_purpose_outside_agreement_refused(gw: Gateway) -> None:
    body = _body(purpose="marketing")
    doc = _problem(_post(gw, _good(gw, body), body), 403, "policy_denied")
    assert [r["code"] for r in doc["reasons"]] == ["purpose_not_permitted"]


def test_classification_above_ceiling_refused(gw: Gateway) -> None:
    body = _body(
        agreement="welfare-tax-status",
        dataset="tax-status",
        fields=["assessed_income"],
    )
    doc = _problem(_post(gw, _good(gw, body), body), 403, "policy_denied")
    codes = {r["code"] for r in doc["reasons"]}
    assert {"field_not_permitted", "classification_exceeds_ceiling"} <= codes


def test_suspension_on_another_node_stops_this_node_at_once(gw: Gateway) -> None:
    body_doc = {"agreement": "welfare-suspend", "fields": ["given_name"]}
    body = _body(**body_doc)
    assert _post(gw, _good(gw, body), body).status_code == 200  # this node has it cached
    url, proc = start_gateway(gw.env, gw.data_dir)
    try:
        r = httpx.post(
            f"{url}/v1/agreements/welfare-suspend/versions/1/status",
            json={"status": "suspended", "reason": "investigation"},
            headers=_admin(gw),
        )
        assert r.status_code == 200, r.text
    finally:
        stop(proc)
    body = _body(**body_doc)
    doc = _problem(_post(gw, _good(gw, body), body), 403, "policy_denied")
    assert [r["code"] for r in doc["reasons"]] == ["agreement_inactive"]


def test_quota_exhausted_refused(gw: Gateway) -> None:
    body_doc = {"agreement": "welfare-quota", "fields": ["given_name"]}
    for _ in range(2):
        body = _body(**body_doc)
        assert _post(gw, _good(gw, body), body).status_code == 200
    body = _body(**body_doc)
    doc = _problem(_post(gw, _good(gw, body), body), 403, "policy_denied")
    assert "quota_exceeded" in [r["code"] for r in doc["reasons"]]


# -- faults ---------------------------------------------------------------------------


def test_provider_down_releases_nothing(gw: Gateway) -> None:
    body = _body(agreement="welfare-person-down", dataset="person-down")
    doc = _problem(_post(gw, _good(gw, body), body), 502, "connector_unavailable")
    assert doc["exchange_id"]


def test_provider_slow_times_out(gw: Gateway) -> None:
    body = _body(agreement="welfare-person-slow", dataset="person-slow")
    _problem(_post(gw, _good(gw, body), body), 504, "connector_timeout")


@contextlib.contextmanager
def _audit_store_refusing(gw: Gateway) -> Iterator[None]:
    """The gateway's audit table refuses every insert (a full disk, a revoked grant)."""
    url = gw.env["ACCORD_DATABASE_URL"]
    if url.startswith("sqlite"):
        db = sqlite3.connect(gw.data_dir / "accord.db", timeout=30)
        db.execute(
            "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        db.commit()
        try:
            yield
        finally:
            db.execute("DROP TRIGGER test_refuse_audit")
            db.commit()
            db.close()
        return
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()"
        )
    try:
        yield
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql("DROP TRIGGER test_refuse_audit ON audit_entries")
            conn.exec_driver_sql("DROP FUNCTION test_refuse_audit()")
        engine.dispose()


def test_audit_database_unavailable_releases_nothing(gw: Gateway) -> None:
    with _audit_store_refusing(gw):
        body = _body()
        r = _post(gw, _good(gw, body), body)
        _problem(r, 503, "audit_unavailable")
        assert "Rossi" not in r.text and SUBJECT not in r.text
    body = _body()
    assert _post(gw, _good(gw, body), body).status_code == 200


def test_log_verifies_after_the_attacks(gw: Gateway) -> None:
    out = gw.audit_cli("verify")
    assert out.returncode == 0, out.stdout + out.stderr
