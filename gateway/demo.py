"""Demo data: departments, keys and signed agreements for a first run.

Seeding is idempotent, so `accord demo` can be run again on the same data
directory. Department private keys are written under the data directory so
the demo's department systems can sign requests and agreements.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.agreements.signing import sign_agreement
from gateway.agreements.terms import AgreementTerms
from gateway.errors import NotFoundError
from gateway.jose import public_jwk
from gateway.registry.models import DepartmentCreate, KeyCreate, SystemCreate
from gateway.services import Services, load_or_create_key

__all__ = ["DEMO_DEPARTMENTS", "demo_agreements", "seed"]

ACTOR = "demo:seed"

DEMO_DEPARTMENTS: list[dict[str, Any]] = [
    {
        "id": "civil-registry",
        "name": "Civil Registry Office",
        "clearance": "restricted",
        "caveats": [],
        "systems": ["population-api"],
    },
    {
        "id": "health-insurer",
        "name": "National Health Insurance Fund",
        "clearance": "restricted",
        "caveats": ["health"],
        "systems": ["claims-db"],
    },
    {
        "id": "tax-authority",
        "name": "Tax and Customs Board",
        "clearance": "restricted",
        "caveats": ["tax"],
        "systems": ["tax-status-service"],
    },
    {
        "id": "welfare-office",
        "name": "Social Welfare Office",
        "clearance": "confidential",
        "caveats": ["tax"],
        "systems": ["benefits-app"],
    },
    {
        "id": "citizen-portal",
        "name": "Citizen Portal",
        "clearance": "internal",
        "caveats": [],
        "systems": ["portal"],
        "capabilities": ["citizen_portal"],
    },
]


def demo_agreements(now_iso: str, until_iso: str) -> list[dict[str, Any]]:
    return [
        {
            "accord_agreement": "1",
            "id": "welfare-person-lookup",
            "version": 1,
            "title": "Civil registry shares person data with the welfare office",
            "provider": "civil-registry",
            "consumer": "welfare-office",
            "required_parties": ["provider", "consumer"],
            "purposes": [
                {
                    "code": "benefit-eligibility",
                    "legal_basis": "Social Welfare Act s.12 (eligibility assessment)",
                }
            ],
            "classification_ceiling": "confidential",
            "caveats": [],
            "valid_from": now_iso,
            "valid_until": until_iso,
            "quotas": {"per_minute": 600, "per_day": 100000},
            "datasets": [
                {
                    "id": "person",
                    "model": "person@1",
                    "fields": {
                        "person_id": {"operation": "pseudonymise"},
                        "given_name": {"operation": "pass"},
                        "family_name": {"operation": "pass"},
                        "birth_date": {"operation": "generalise", "to": "year"},
                        "age": {"operation": "verify_only", "predicates": ["age_over"]},
                    },
                }
            ],
            "retention": {"max_days": 30, "obligation": "Delete after the eligibility decision"},
            "onward_sharing": False,
        },
    ]


def _key_path(services: Services, dept: str) -> Path:
    return services.settings.data_dir / "demo-keys" / f"{dept}.pem"


def seed(services: Services) -> dict[str, Any]:
    registry = services.registry
    created: list[str] = []
    for spec in DEMO_DEPARTMENTS:
        try:
            registry.get_department(spec["id"])
            continue
        except NotFoundError:
            pass
        registry.register_department(
            DepartmentCreate(
                id=spec["id"],
                name=spec["name"],
                clearance=spec["clearance"],
                caveats=spec["caveats"],
                contact=f"dpo@{spec['id']}.example",
            ),
            actor=ACTOR,
        )
        for system in spec["systems"]:
            registry.add_system(
                spec["id"],
                SystemCreate(
                    system_id=system, name=system, capabilities=spec.get("capabilities", [])
                ),
                actor=ACTOR,
            )
        key = load_or_create_key(_key_path(services, spec["id"]), create=True)
        registry.add_key(spec["id"], KeyCreate(jwk=public_jwk(key)), actor=ACTOR)
        created.append(spec["id"])
    now = services.agreements.clock().replace(microsecond=0)
    start = (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    until = (now + timedelta(days=365)).isoformat().replace("+00:00", "Z")
    agreements = []
    for doc in demo_agreements(start, until):
        try:
            services.agreements.get(doc["id"])
            continue
        except NotFoundError:
            pass
        terms = AgreementTerms.from_json(doc)
        jws = sign_agreement(
            {"payload": "", "signatures": []},
            load_or_create_key(_key_path(services, terms.provider), create=False),
            party="provider",
            terms=terms,
        )
        jws = sign_agreement(
            jws,
            load_or_create_key(_key_path(services, terms.consumer), create=False),
            party="consumer",
        )
        services.agreements.submit(jws.to_json(), actor=ACTOR)
        agreements.append(terms.ref)
    return {
        "departments_created": created,
        "agreements_created": agreements,
        "departments": [d.id for d in registry.list_departments()],
    }
