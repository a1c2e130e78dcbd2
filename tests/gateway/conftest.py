"""Gateway fixtures: services on a real database, a settable clock, demo parties."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.agreements.signing import sign_agreement
from gateway.agreements.terms import AgreementTerms
from gateway.cli.main import app as cli_app
from gateway.jose import PrivateKey, generate_private_key, public_jwk
from gateway.registry.models import DepartmentCreate, KeyCreate
from gateway.services import Services, build_services
from gateway.settings import Settings

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Callable[..., str]:
    """Runs ``accord ARGS`` in-process on ``db_url``; asserts it succeeds (or, with
    ``ok=False``, fails) and returns its output."""
    monkeypatch.setenv("ACCORD_DEV_MODE", "true")
    monkeypatch.setenv("ACCORD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ACCORD_DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> str:
        result = runner.invoke(cli_app, list(args))
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return run


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_services(db_url: str, data_dir: Path, clock: Clock) -> Services:
    settings = Settings(dev_mode=True, database_url=db_url, data_dir=data_dir)
    services = build_services(settings)
    services.registry.clock = clock
    services.agreements.clock = clock
    return services


@pytest.fixture
def services(db_url: str, tmp_path: Path, clock: Clock) -> Iterator[Services]:
    """Services on SQLite and on PostgreSQL (parametrised through ``db_url``)."""
    svc = make_services(db_url, tmp_path, clock)
    yield svc
    svc.close()


@pytest.fixture
def sqlite_services(sqlite_url: str, tmp_path: Path, clock: Clock) -> Iterator[Services]:
    svc = make_services(sqlite_url, tmp_path, clock)
    yield svc
    svc.close()


@dataclass
class Parties:
    services: Services
    keys: dict[str, PrivateKey]

    def terms(self, **overrides: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "accord_agreement": "1",
            "id": "person-lookup",
            "version": 1,
            "title": "Registry shares person data with welfare",
            "provider": "civil-registry",
            "consumer": "welfare-office",
            "required_parties": ["provider", "consumer"],
            "purposes": [{"code": "benefit-eligibility", "legal_basis": "Welfare Act s.12"}],
            "classification_ceiling": "confidential",
            "caveats": [],
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2027-01-01T00:00:00Z",
            "quotas": {"per_minute": 60, "per_day": 1000},
            "datasets": [
                {
                    "id": "person",
                    "model": "person@1",
                    "fields": {
                        "given_name": {"operation": "pass"},
                        "birth_date": {"operation": "generalise", "to": "year"},
                    },
                }
            ],
            "retention": {"max_days": 30},
            "onward_sharing": False,
        }
        doc.update(overrides)
        return doc

    def sign(
        self,
        doc: dict[str, Any],
        parties: tuple[str, ...] = ("provider", "consumer"),
        now: datetime | None = None,
    ) -> dict[str, Any]:
        terms = AgreementTerms.from_json(doc)
        jws: Any = {"payload": "", "signatures": []}
        for party in parties:
            dept = terms.party_department(party)
            assert dept is not None
            jws = sign_agreement(
                jws,
                self.keys[dept],
                party=party,
                terms=terms,
                now=now or self.services.agreements.clock(),
            )
        return dict(jws.to_json())


@pytest.fixture
def parties(services: Services) -> Parties:
    return register_parties(services)


def register_parties(services: Services) -> Parties:
    keys: dict[str, PrivateKey] = {}
    specs = [
        ("civil-registry", "restricted", []),
        ("welfare-office", "confidential", ["tax"]),
        ("data-authority", "restricted", []),
        ("low-clearance", "internal", []),
    ]
    for i, (dept, clearance, caveats) in enumerate(specs):
        services.registry.register_department(
            DepartmentCreate(id=dept, name=dept.title(), clearance=clearance, caveats=caveats),
            actor="test",
        )
        key = generate_private_key("EdDSA" if i % 2 == 0 else "ES256")
        services.registry.add_key(
            dept, KeyCreate(jwk=public_jwk(key), not_before=T0 - timedelta(days=365)), actor="test"
        )
        keys[dept] = key
    return Parties(services, keys)
