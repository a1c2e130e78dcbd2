"""Which registered keys may sign a sharing agreement: a department's, never a system's.

A key bound to a system (``KeyCreate.system``, ``RegistryService.bind_key``) is
that system's: it signs the system's request tokens, and whoever runs the system
holds it, a citizen portal's operator for one. An agreement commits the whole
department to sharing data, so a signature on one must come from a key the
department registered for itself, bound to no system. Otherwise the operator of
any one system could put an agreement in force in the department's name.
"""

from __future__ import annotations

from datetime import datetime

from gateway.errors import SignatureError
from gateway.jose import PublicKey
from gateway.registry.service import RegistryService

__all__ = ["agreement_key"]


def agreement_key(
    registry: RegistryService, kid: str, department: str, now: datetime, signed_at: datetime
) -> tuple[PublicKey, str]:
    """The public key and algorithm that verify ``department``'s signature made with
    ``kid`` at ``signed_at``; raise unless the key may verify now and then
    (``RegistryService.verification_key``) and is bound to no system (422
    ``key_bound_to_system``)."""
    key = registry.verification_key(kid, department=department, now=now, signed_at=signed_at)
    system = registry.get_key(kid).system_id
    if system is not None:
        raise SignatureError(
            f"key {kid} is bound to system {system!r}: it signs that system's requests,"
            " not agreements; sign with a key of the department bound to no system",
            code="key_bound_to_system",
        )
    return key
