"""Keys bound to a system, capabilities, suspension: the registry on SQLite and PostgreSQL.

The end-to-end attacks are in ``tests/exchange/test_registry_controls.py``; here
the migration that adds ``department_key.system_id`` to a store already holding
keys, and the registry's own rules.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa

from gateway.auth.requests import TOKEN_TYPE, RequestTokenVerifier, body_hash
from gateway.db import make_engine, upgrade
from gateway.errors import AuthError, ConflictError, NotFoundError, ValidationFailed
from gateway.jose import PrivateKey, generate_private_key, public_jwk
from gateway.registry.models import DepartmentCreate, KeyCreate, SystemCreate, SystemUpdate
from gateway.services import Services
from gateway.statecache import StateCache
from tests.gateway.conftest import Clock, make_services


def _token(key: PrivateKey, department: str, system: str) -> str:
    now = int(time.time())
    claims = {
        "iss": department,
        "sub": system,
        "aud": "accord-gateway",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        "htm": "POST",
        "htu": "/v1/exchanges",
        "bsh": body_hash(b"{}"),
    }
    kid = public_jwk(key)["kid"]
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": TOKEN_TYPE, "kid": kid})


def _verify(
    services: Services,
    key: PrivateKey,
    department: str,
    system: str,
    cache: StateCache | None = None,
) -> str:
    """The verified system; read through ``cache`` (as the exchange does) when given."""
    verifier = RequestTokenVerifier(
        services.registry, audience="accord-gateway", replay=lambda *_: None
    )
    caller = verifier.verify(
        _token(key, department, system),
        method="POST",
        path="/v1/exchanges",
        body=b"{}",
        now=datetime.now(UTC),
        state=None if cache is None else cache.refresh(),
    )
    return caller.system


def _refused(
    services: Services,
    key: PrivateKey,
    department: str,
    system: str,
    cache: StateCache | None = None,
) -> str:
    with pytest.raises(AuthError) as caught:
        _verify(services, key, department, system, cache)
    return caught.value.code


def test_migration_keeps_existing_keys_unbound_and_working(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0004_exchange")
    key = generate_private_key("EdDSA")
    jwk = public_jwk(key)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO department (id, name, clearance, contact, caveats, status, created_at)"
                " VALUES ('tax-office', 'Tax', 'internal', '', '[]', 'active', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO department_system"
                " (department_id, system_id, name, capabilities, status, created_at)"
                " VALUES ('tax-office', 'returns-api', '', '[]', 'active', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO department_key (kid, department_id, alg, jwk, not_before, created_at)"
                " VALUES (:kid, 'tax-office', 'EdDSA', :jwk, :now, :now)"
            ),
            {"kid": jwk["kid"], "jwk": json.dumps(jwk), "now": now},
        )
    upgrade(engine)
    with engine.connect() as conn:
        bound = conn.execute(sa.text("SELECT kid, system_id FROM department_key")).all()
    assert [tuple(row) for row in bound] == [(jwk["kid"], None)]
    engine.dispose()
    services = make_services(db_url, tmp_path, Clock(now))
    try:
        assert _verify(services, key, "tax-office", "returns-api") == "returns-api"
        assert services.registry.list_keys("tax-office")[0].system_id is None
    finally:
        services.close()


def _dept(services: Services) -> None:
    services.registry.register_department(
        DepartmentCreate(id="portal-dept", name="Portal", clearance="internal"), actor="t"
    )
    for system, caps in (("portal", ["citizen_portal"]), ("desk", [])):
        services.registry.add_system(
            "portal-dept", SystemCreate(system_id=system, capabilities=caps), actor="t"
        )


def test_unknown_capability_refused(services: Services) -> None:
    _dept(services)
    for caps in (["citizen-portal"], ["citizen_portal", "superuser"]):
        with pytest.raises(ValidationFailed) as caught:
            services.registry.add_system(
                "portal-dept", SystemCreate(system_id="typo", capabilities=caps), actor="t"
            )
        assert caught.value.code == "unknown_capability"
        with pytest.raises(ValidationFailed):
            services.registry.update_system(
                "portal-dept", "desk", SystemUpdate(capabilities=caps), actor="t"
            )
    assert [s.system_id for s in services.registry.list_systems("portal-dept")] == [
        "portal",
        "desk",
    ]


def test_department_key_cannot_take_a_systems_capability(services: Services) -> None:
    _dept(services)
    shared, bound = generate_private_key("EdDSA"), generate_private_key("EdDSA")
    services.registry.add_key("portal-dept", KeyCreate(jwk=public_jwk(shared)), actor="t")
    services.registry.add_key(
        "portal-dept", KeyCreate(jwk=public_jwk(bound), system="portal"), actor="t"
    )
    assert _verify(services, shared, "portal-dept", "desk") == "desk"
    assert _refused(services, shared, "portal-dept", "portal") == "wrong_system_key"
    assert _verify(services, bound, "portal-dept", "portal") == "portal"
    assert _refused(services, bound, "portal-dept", "desk") == "wrong_system_key"
    # Granting a capability later ties the system to bound keys from then on.
    services.registry.update_system(
        "portal-dept", "desk", SystemUpdate(capabilities=["citizen_portal"]), actor="t"
    )
    assert _refused(services, shared, "portal-dept", "desk") == "wrong_system_key"
    with pytest.raises(NotFoundError):
        services.registry.add_key(
            "portal-dept",
            KeyCreate(jwk=public_jwk(generate_private_key("EdDSA")), system="nope"),
            actor="t",
        )


def test_a_key_bound_elsewhere_is_not_cached_with_the_system(services: Services) -> None:
    _dept(services)
    bound = generate_private_key("EdDSA")
    kid = services.registry.add_key(
        "portal-dept", KeyCreate(jwk=public_jwk(bound), system="portal"), actor="t"
    ).kid
    assert services.registry.caller_rows(kid, "portal-dept", "portal").whole()
    assert not services.registry.caller_rows(kid, "portal-dept", "desk").whole()


def test_suspension_and_disabling_are_audited_and_seen_at_once(services: Services) -> None:
    _dept(services)
    key = generate_private_key("EdDSA")
    services.registry.add_key("portal-dept", KeyCreate(jwk=public_jwk(key)), actor="t")
    cache = StateCache(services.engine)
    assert _verify(services, key, "portal-dept", "desk", cache) == "desk"  # now cached
    services.registry.set_department_status("portal-dept", "suspended", "compromise", actor="t")
    assert _refused(services, key, "portal-dept", "desk", cache) == "department_inactive"
    with pytest.raises(ConflictError) as caught:
        services.registry.set_department_status("portal-dept", "suspended", "again", actor="t")
    assert caught.value.code == "no_change"
    services.registry.set_department_status("portal-dept", "active", "cleared", actor="t")
    assert _verify(services, key, "portal-dept", "desk", cache) == "desk"
    services.registry.set_system_status("portal-dept", "desk", "disabled", actor="t")
    assert _refused(services, key, "portal-dept", "desk", cache) == "unknown_system"
    services.registry.set_system_status("portal-dept", "desk", "active", actor="t")
    assert _verify(services, key, "portal-dept", "desk", cache) == "desk"
    services.registry.update_system(
        "portal-dept", "desk", SystemUpdate(capabilities=["citizen_portal"]), actor="t"
    )
    assert _refused(services, key, "portal-dept", "desk", cache) == "wrong_system_key"
    with pytest.raises(ValidationFailed):
        services.registry.set_system_status("portal-dept", "desk", "gone", actor="t")
    outcomes = [
        json.loads(row)["outcome"]
        for row in _audit_rows(services)
        if json.loads(row)["event"] == "department_change"
    ]
    assert outcomes[-5:] == [
        "department_suspended",
        "department_reinstated",
        "system_disabled",
        "system_enabled",
        "system_changed",
    ]


def _audit_rows(services: Services) -> list[bytes]:
    with services.engine.connect() as conn:
        return [
            bytes(r)
            for r in conn.execute(sa.text("SELECT data FROM audit_entries ORDER BY seq")).scalars()
        ]
