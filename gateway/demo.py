"""Demo data: departments, keys and signed agreements for a first run.

Seeding is idempotent, so `accord demo` can be run again on the same data
directory. Department private keys are written under the data directory so
the demo's department systems can sign requests and agreements.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.agreements.signing import sign_agreement
from gateway.agreements.terms import AgreementTerms
from gateway.errors import NotFoundError
from gateway.exchange.models import ConsumerMappingCreate, DatasetBindingCreate
from gateway.jose import public_jwk
from gateway.registry.models import DepartmentCreate, KeyCreate, SystemCreate
from gateway.services import Services, load_or_create_key

__all__ = [
    "DEMO_BINDINGS",
    "DEMO_DEPARTMENTS",
    "agreement_doc",
    "demo_agreements",
    "seed",
    "seed_bindings",
]

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
        "caveats": ["tax", "health"],
        "systems": ["benefits-app"],
    },
    {
        "id": "citizen-portal",
        "name": "Citizen Portal",
        "clearance": "internal",
        "caveats": [],
        "systems": ["portal"],
        "capabilities": ["citizen_portal"],
        # A system with capabilities takes only a key bound to it.
        "key_system": "portal",
    },
]


def agreement_doc(
    agreement_id: str,
    title: str,
    provider: str,
    consumer: str,
    purpose: tuple[str, str],
    ceiling: str,
    caveats: list[str],
    datasets: list[dict[str, Any]],
    window: tuple[str, str],
) -> dict[str, Any]:
    return {
        "accord_agreement": "1",
        "id": agreement_id,
        "version": 1,
        "title": title,
        "provider": provider,
        "consumer": consumer,
        "required_parties": ["provider", "consumer"],
        "purposes": [{"code": purpose[0], "legal_basis": purpose[1]}],
        "classification_ceiling": ceiling,
        "caveats": caveats,
        "valid_from": window[0],
        "valid_until": window[1],
        "quotas": {"per_minute": 6000, "per_day": 1_000_000},
        "datasets": datasets,
        "retention": {"max_days": 30, "obligation": "Delete after the decision it supports"},
        "onward_sharing": False,
    }


def demo_agreements(now_iso: str, until_iso: str) -> list[dict[str, Any]]:
    """One agreement per connector kind (REST, SQL, SOAP, CSV), plus an aggregate dataset."""
    window = (now_iso, until_iso)
    eligibility = ("benefit-eligibility", "Social Welfare Act s.12 (eligibility assessment)")
    return [
        agreement_doc(
            "welfare-person-lookup",
            "Civil registry shares person data with the welfare office",
            "civil-registry",
            "welfare-office",
            eligibility,
            "confidential",
            [],
            [
                {
                    "id": "person",
                    "model": "person@1",
                    "fields": {
                        "person_id": {"operation": "pseudonymise"},
                        "given_name": {"operation": "pass"},
                        "family_name": {"operation": "pass"},
                        "birth_date": {
                            "operation": "verify_only",
                            "predicates": ["age_over(18)", "age_over(65)"],
                        },
                        "address_city": {"operation": "pass"},
                        "address_postcode": {"operation": "generalise", "to": "district"},
                        "marital_status": {"operation": "pass"},
                    },
                },
                {
                    "id": "person-statistics",
                    "model": "person@1",
                    "fields": {
                        "address_city": {"operation": "aggregate"},
                        "sex": {"operation": "aggregate"},
                        "marital_status": {"operation": "aggregate"},
                    },
                    "aggregate": {"min_k": 5},
                },
            ],
            window,
        ),
        agreement_doc(
            "welfare-health-cover",
            "Health insurer confirms health cover to the welfare office",
            "health-insurer",
            "welfare-office",
            eligibility,
            "confidential",
            ["health"],
            [
                {
                    "id": "health-coverage",
                    "model": "health_coverage@1",
                    "fields": {
                        "person_id": {"operation": "pseudonymise"},
                        "plan": {"operation": "pass"},
                        "status": {"operation": "pass"},
                        "start_date": {"operation": "generalise", "to": "month"},
                        "end_date": {"operation": "generalise", "to": "month"},
                    },
                }
            ],
            window,
        ),
        agreement_doc(
            "welfare-tax-status",
            "Tax authority shares filing and compliance status with the welfare office",
            "tax-authority",
            "welfare-office",
            eligibility,
            "confidential",
            ["tax"],
            [
                {
                    "id": "tax-status",
                    "model": "tax_status@1",
                    "fields": {
                        "person_id": {"operation": "pseudonymise"},
                        "filing_status": {"operation": "pass"},
                        "resident": {"operation": "pass"},
                        "compliance": {"operation": "pass"},
                        "last_assessment_year": {"operation": "pass"},
                    },
                }
            ],
            window,
        ),
        agreement_doc(
            "tax-benefit-claims",
            "Welfare office reports benefit claims to the tax authority",
            "welfare-office",
            "tax-authority",
            ("income-assessment", "Income Tax Act s.40 (taxable benefits)"),
            "confidential",
            [],
            [
                {
                    "id": "benefit-claim",
                    "model": "benefit_claim@1",
                    "fields": {
                        "claim_id": {"operation": "pass"},
                        "person_id": {"operation": "pass"},
                        "status": {"operation": "pass"},
                        "monthly_amount": {"operation": "pass"},
                        "filed_on": {"operation": "generalise", "to": "month"},
                    },
                }
            ],
            window,
        ),
    ]


#: (provider, dataset, example folder, connector entity, mapping file, canonical model)
DEMO_BINDINGS: list[tuple[str, str, str, str, str, str]] = [
    ("civil-registry", "person", "civil_registry", "citizen", "citizen", "person@1"),
    ("civil-registry", "person-statistics", "civil_registry", "citizen", "citizen", "person@1"),
    (
        "health-insurer",
        "health-coverage",
        "health_insurer",
        "member_cover",
        "member_cover",
        "health_coverage@1",
    ),
    ("tax-authority", "tax-status", "tax_authority", "tax_status", "tax_status", "tax_status@1"),
    ("welfare-office", "benefit-claim", "welfare_office", "claim", "claim", "benefit_claim@1"),
]


def seed_bindings(services: Services) -> list[str]:
    """Bind each demo dataset to its sample system's connector config and mapping.

    Configs are stored with their ``${ENV}`` placeholders (endpoints, tokens),
    which the gateway fills from its own environment when it builds a connector.
    """
    import yaml

    from examples.launch import EXAMPLES

    bound = []
    for provider, dataset, folder, entity, mapping, model in DEMO_BINDINGS:
        config = yaml.safe_load((EXAMPLES / folder / "connector.yaml").read_text("utf-8"))
        for key in ("wsdl", "directory"):
            value = config.get(key)
            if isinstance(value, str) and "${" not in value and not Path(value).is_absolute():
                config[key] = str((EXAMPLES / folder / value).resolve())
        spec = yaml.safe_load((EXAMPLES / folder / f"{mapping}.mapping.yaml").read_text("utf-8"))
        services.bindings.put_binding(
            provider,
            DatasetBindingCreate(
                dataset_id=dataset,
                model=model,
                entity=entity,
                connector=config,
                mapping=spec,
                subject_field="person_id",
            ),
            actor=ACTOR,
        )
        bound.append(f"{provider}/{dataset}")
    spec = yaml.safe_load(
        (EXAMPLES / "welfare_office" / "person.consumer.mapping.yaml").read_text("utf-8")
    )
    schema = json.loads(
        (EXAMPLES / "welfare_office" / "person.consumer.schema.json").read_text("utf-8")
    )
    services.bindings.put_consumer_mapping(
        "welfare-office",
        ConsumerMappingCreate(name="welfare-client", mapping=spec, json_schema=schema),
        actor=ACTOR,
    )
    bound.append("welfare-office:welfare-client (consumer schema)")
    return bound


def _key_path(services: Services, dept: str) -> Path:
    return services.settings.data_dir / "demo-keys" / f"{dept}.pem"


def _bind_demo_key(services: Services, spec: dict[str, Any]) -> None:
    """Bind the department's demo key to its ``key_system`` if it is registered unbound.

    A data directory seeded before keys could be bound holds the portal's key
    unbound, and the portal system takes only a key bound to it: without this, the
    demo's own portal would be refused (``wrong_system_key``). A key that is
    missing, revoked or expired is left as it is.
    """
    system = spec.get("key_system")
    path = _key_path(services, spec["id"])
    if system is None or not path.exists():
        return
    kid = public_jwk(load_or_create_key(path, create=False))["kid"]
    now = services.registry.clock()
    for key in services.registry.list_keys(spec["id"]):
        if key.kid == kid and key.system_id is None and key.usable_at(now):
            services.registry.bind_key(spec["id"], kid, system, actor=ACTOR)


def seed(services: Services, *, per_minute: int | None = None) -> dict[str, Any]:
    """Register the demo departments, keys, signed agreements and bindings (idempotent).

    A department already registered is kept as it is, except that a demo key its
    spec binds to a system is bound if it is not yet (a data directory seeded before
    keys could be bound). ``per_minute`` replaces the agreements' per-minute quota
    (the load benchmark measures throughput, not the demo's quota).
    """
    registry = services.registry
    created: list[str] = []
    for spec in DEMO_DEPARTMENTS:
        try:
            registry.get_department(spec["id"])
        except NotFoundError:
            pass
        else:
            _bind_demo_key(services, spec)
            continue
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
        registry.add_key(
            spec["id"], KeyCreate(jwk=public_jwk(key), system=spec.get("key_system")), actor=ACTOR
        )
        created.append(spec["id"])
    now = services.agreements.clock().replace(microsecond=0)
    start = (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    until = (now + timedelta(days=365)).isoformat().replace("+00:00", "Z")
    agreements = []
    for doc in demo_agreements(start, until):
        if per_minute is not None:
            doc["quotas"]["per_minute"] = per_minute
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
        "datasets_bound": seed_bindings(services),
        "departments": [d.id for d in registry.list_departments()],
    }
