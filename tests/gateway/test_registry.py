"""Registry storage on SQLite and PostgreSQL: departments, systems, keys, rotation."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from gateway.db import make_engine, upgrade
from gateway.errors import ConflictError, NotFoundError, SignatureError, ValidationFailed
from gateway.jose import generate_private_key, public_jwk
from gateway.registry.models import DepartmentCreate, KeyCreate, SystemCreate
from gateway.services import Services
from tests.gateway.conftest import Clock


def test_migration_up_from_empty(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    names = set(sa.inspect(engine).get_table_names())
    assert {
        "department",
        "department_key",
        "department_system",
        "agreement",
        "agreement_event",
        "alembic_version",
    } <= names
    upgrade(engine)  # idempotent
    engine.dispose()


def test_migrations_create_every_model_table_with_its_columns(db_url: str) -> None:
    """The hand-written migrations and the SQLModel classes must describe the same store."""
    from sqlmodel import SQLModel

    import gateway.exchange.models
    import gateway.policy.models
    from audit.store import metadata as audit_metadata

    engine = make_engine(db_url)
    upgrade(engine)
    inspector = sa.inspect(engine)
    present = set(inspector.get_table_names())
    for table in [*SQLModel.metadata.sorted_tables, *audit_metadata.sorted_tables]:
        assert table.name in present, f"no migration creates {table.name}"
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert {c.name for c in table.columns} == columns, table.name
    assert gateway.exchange.models.DatasetBinding.__tablename__ in present
    engine.dispose()


def dept(services: Services, dept_id: str = "tax-office", clearance: str = "confidential") -> None:
    services.registry.register_department(
        DepartmentCreate(id=dept_id, name="Tax Office", clearance=clearance, caveats=["tax"]),
        actor="t",
    )


def test_department_round_trip(services: Services) -> None:
    dept(services)
    got = services.registry.get_department("tax-office")
    assert (got.name, got.clearance, got.caveats, got.status) == (
        "Tax Office",
        "confidential",
        ["tax"],
        "active",
    )
    with pytest.raises(ConflictError):
        dept(services)
    with pytest.raises(NotFoundError):
        services.registry.get_department("nobody")


def test_clearance_must_be_a_scheme_level(services: Services) -> None:
    with pytest.raises(ValidationFailed) as err:
        dept(services, clearance="cosmic")
    assert err.value.code == "unknown_classification_level"
    assert services.registry.list_departments() == []


def test_systems(services: Services) -> None:
    dept(services)
    services.registry.add_system("tax-office", SystemCreate(system_id="returns-api"), actor="t")
    assert services.registry.get_system("tax-office", "returns-api").system_id == "returns-api"
    with pytest.raises(ConflictError):
        services.registry.add_system("tax-office", SystemCreate(system_id="returns-api"), actor="t")
    with pytest.raises(NotFoundError):
        services.registry.get_system("tax-office", "other")


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_keys_rotate_and_revoke(services: Services, clock: Clock, alg: str) -> None:
    dept(services)
    old, new = generate_private_key(alg), generate_private_key(alg)
    k_old = services.registry.add_key("tax-office", KeyCreate(jwk=public_jwk(old)), actor="t")
    k_new = services.registry.add_key("tax-office", KeyCreate(jwk=public_jwk(new)), actor="t")
    assert k_old.kid == public_jwk(old)["kid"] and k_old.alg == alg
    now = clock()
    for kid in (k_old.kid, k_new.kid):  # several keys live at once
        services.registry.verification_key(kid, department="tax-office", now=now)
    services.registry.revoke_key(k_old.kid, "rotated out", actor="t")
    with pytest.raises(SignatureError) as err:
        services.registry.verification_key(k_old.kid, department="tax-office", now=now)
    assert err.value.code == "key_revoked"
    services.registry.verification_key(k_new.kid, department="tax-office", now=now)
    with pytest.raises(ConflictError):
        services.registry.revoke_key(k_old.kid, "again", actor="t")


def test_expired_key_verifies_nothing(services: Services, clock: Clock) -> None:
    dept(services)
    key = generate_private_key()
    row = services.registry.add_key(
        "tax-office",
        KeyCreate(
            jwk=public_jwk(key),
            not_before=clock() - timedelta(days=2),
            not_after=clock() + timedelta(days=1),
        ),
        actor="t",
    )
    services.registry.verification_key(row.kid, department="tax-office", now=clock())
    with pytest.raises(SignatureError) as err:
        services.registry.verification_key(
            row.kid, department="tax-office", now=clock() + timedelta(days=1)
        )
    assert err.value.code == "key_expired"


@pytest.mark.parametrize(
    ("jwk", "code"),
    [
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "unsupported_key"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "private_jwk"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "short"}, "malformed_jwk"),
        ({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}, "unsupported_key"),
    ],
    ids=["rsa", "symmetric", "bad_ed25519", "p384"],
)
def test_bad_keys_are_refused(services: Services, jwk: dict, code: str) -> None:
    dept(services)
    with pytest.raises(ValidationFailed) as err:
        services.registry.add_key("tax-office", KeyCreate(jwk=jwk), actor="t")
    assert err.value.code == code
    assert services.registry.list_keys("tax-office") == []


def test_private_jwk_is_refused(services: Services) -> None:
    dept(services)
    from jwcrypto import jwk as jc

    private = jc.JWK.generate(kty="OKP", crv="Ed25519").export(private_key=True, as_dict=True)
    with pytest.raises(ValidationFailed) as err:
        services.registry.add_key("tax-office", KeyCreate(jwk=private), actor="t")
    assert err.value.code == "private_jwk"


def test_kid_must_be_the_thumbprint(services: Services) -> None:
    dept(services)
    jwk = {**public_jwk(generate_private_key()), "kid": "my-key-1"}
    with pytest.raises(ValidationFailed) as err:
        services.registry.add_key("tax-office", KeyCreate(jwk=jwk), actor="t")
    assert err.value.code == "kid_not_thumbprint"


def test_key_of_another_department_does_not_verify(services: Services, clock: Clock) -> None:
    dept(services)
    dept(services, "other-office")
    row = services.registry.add_key(
        "tax-office", KeyCreate(jwk=public_jwk(generate_private_key())), actor="t"
    )
    with pytest.raises(SignatureError) as err:
        services.registry.verification_key(row.kid, department="other-office", now=clock())
    assert err.value.code == "wrong_department_key"
