"""The parties of an agreement against the registry: registered, active, cleared."""

from __future__ import annotations

from gateway.agreements.terms import AgreementTerms
from gateway.errors import AgreementError
from gateway.registry.service import RegistryService

__all__ = ["verify_parties"]


def verify_parties(registry: RegistryService, terms: AgreementTerms) -> None:
    """Raise unless every party is registered and active, and the consumer may hold
    what the terms release (ceiling within its clearance, every caveat held)."""
    scheme = registry.scheme
    provider = registry.get_department(terms.provider)
    consumer = registry.get_department(terms.consumer)
    if terms.authority:
        registry.get_department(terms.authority)
    for dept in (provider, consumer):
        if dept.status != "active":
            raise AgreementError(
                f"department {dept.id!r} is {dept.status}", code="department_inactive"
            )
    scheme.verify_level(terms.ceiling)
    unknown = terms.caveats - scheme.caveats
    if unknown:
        raise AgreementError(f"unknown caveats {sorted(unknown)}", code="unknown_caveat")
    if not scheme.dominates(consumer.clearance, terms.ceiling):
        raise AgreementError(
            f"ceiling {terms.ceiling!r} exceeds consumer clearance {consumer.clearance!r}",
            code="ceiling_exceeds_clearance",
        )
    if not terms.caveats <= set(consumer.caveats):
        raise AgreementError(
            "the consumer does not hold every caveat of the agreement", code="caveat_missing"
        )
