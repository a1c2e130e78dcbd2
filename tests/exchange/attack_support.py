"""What the attack suite (``test_attacks.py``) stands up and sends: the extra
agreements and failing providers it needs, and well-formed or forged requests."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import jwt
import sqlalchemy as sa
import yaml

from examples.launch import EXAMPLES
from gateway.auth.requests import TOKEN_TYPE, body_hash
from gateway.demo import agreement_doc
from gateway.exchange.models import DatasetBindingCreate
from gateway.jose import PrivateKey, public_jwk
from gateway.services import Services
from tests._support.gateway import Gateway, add_agreement
from tests.exchange.conftest import subject_with

PATH = "/v1/exchanges"
SUBJECT = subject_with("civil")


def request_body(**overrides: Any) -> bytes:
    doc = {
        "agreement": "welfare-person-lookup",
        "dataset": "person",
        "purpose": "benefit-eligibility",
        "query": {"kind": "record", "subject": SUBJECT},
        **overrides,
    }
    return json.dumps(doc).encode()


class SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(3)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_attack_gateway(slow_url: str) -> Any:
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
        # An agreement that permits a field classified above its own ceiling (signed
        # before the field's classification was raised, say): the policy still refuses.
        income = {
            "id": "tax-status",
            "model": "tax_status@1",
            "fields": {"assessed_income": {"operation": "pass"}},
        }
        add_agreement(
            services,
            agreement_doc(
                "welfare-tax-income",
                "t",
                "tax-authority",
                "welfare-office",
                basis,
                "confidential",
                ["tax"],
                [income],
                window,
            ),
        )
        config = yaml.safe_load((EXAMPLES / "civil_registry" / "connector.yaml").read_text())
        spec = yaml.safe_load((EXAMPLES / "civil_registry" / "citizen.mapping.yaml").read_text())
        for dataset, base_url in (
            ("person-down", f"http://127.0.0.1:{closed_port()}"),
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


def key_id(key: PrivateKey) -> str:
    return str(public_jwk(key)["kid"])


def token_claims(body: bytes, **overrides: Any) -> dict[str, Any]:
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


def sign_token(key: PrivateKey, claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        claims, key, algorithm="EdDSA", headers={"typ": TOKEN_TYPE, "kid": key_id(key), **header}
    )


def read_accesses(
    gw: Gateway, key: PrivateKey, path: str, *, iss: str = "citizen-portal", sub: str = "portal"
) -> httpx.Response:
    """``GET`` a subject's access log (``path``) with a request token of ``iss``/``sub``."""
    claims = token_claims(b"", iss=iss, sub=sub, htm="GET", htu=path)
    headers = {"Authorization": f"Bearer {sign_token(key, claims)}"}
    return httpx.get(gw.url + path, headers=headers, timeout=30)


def post_exchange(gw: Gateway, token: str | None, body: bytes, path: str = PATH) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(gw.url + path, content=body, headers=headers, timeout=30)


def expect_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = r.json()
    assert doc["code"] == code, doc
    assert doc["type"] == f"urn:accord:problem:{code}"
    assert "records" not in r.text and "result" not in doc
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    return doc


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def good_token(gw: Gateway, body: bytes) -> str:
    return sign_token(gw.key("welfare-office"), token_claims(body))


@contextlib.contextmanager
def audit_store_refusing(gw: Gateway) -> Iterator[None]:
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
