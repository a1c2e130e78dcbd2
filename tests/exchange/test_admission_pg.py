"""Admission on PostgreSQL: checked against the cached state, claimed in one round trip.

Another node changes the state by writing to the shared database (here a second
``Services`` on the same database, as a second gateway would); the gateway under
test learns of it only from the generation its claim statement returns. Every
change must still stop, or let through, the very next exchange.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.demo import agreement_doc
from gateway.errors import AuthError
from gateway.exchange.admission import Admission
from gateway.exchange.counters import Usage
from gateway.exchange.trace import Trace
from gateway.jose import generate_private_key, load_private_key_pem, public_jwk
from gateway.registry.models import KeyCreate, SystemCreate
from gateway.services import Services, build_services
from gateway.settings import Settings
from gateway.statecache import bump_generation
from tests._support.gateway import add_agreement, seeded_services
from tests.exchange.attack_support import key_id, request_body, sign_token, token_claims
from tests.exchange.conftest import quota_counts

PATH = "/v1/exchanges"


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Services, Services]]:
    """The gateway under test, and another node on the same database."""
    here = seeded_services(pg_url, tmp_path)
    there = build_services(Settings(dev_mode=True, database_url=pg_url, data_dir=tmp_path))
    yield here, there
    for services in (here, there):
        services.close()
        services.engine.dispose()


class Counting:
    """Counts the admission's generation reads and claims."""

    def __init__(self, admission: Admission) -> None:
        assert admission.pg is not None
        self.reads = self.claims = 0
        pg = admission.pg
        read, claim = pg.generation, pg.claim

        async def counted_read() -> int:
            self.reads += 1
            return await read()

        async def counted_claim(*args: Any) -> Any:
            self.claims += 1
            return await claim(*args)

        pg.generation = counted_read  # type: ignore[method-assign]
        pg.claim = counted_claim  # type: ignore[method-assign,assignment]


def _admit(
    admission: Admission, key: Any, body: bytes | None = None, claims: dict[str, Any] | None = None
) -> Any:
    body = body or request_body()
    token = sign_token(key, token_claims(body, **(claims or {})))
    trace = Trace(exchange_id="x", request_sha256="0" * 64)
    return admission.admit(trace, token, "POST", PATH, body, datetime.now(UTC))


def _jtis(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM request_jti")).scalar_one())


def test_a_warm_gateway_sends_one_statement_and_sees_another_nodes_changes_at_once(
    nodes: tuple[Services, Services],
) -> None:
    here, there = nodes
    demo_key = here.gateway_key  # not a department key: only to show it is refused
    welfare = _demo_key(here)

    async def main() -> None:
        await here.start()
        admission = here.exchange.admission
        seen = Counting(admission)

        await _admit(admission, welfare)  # nothing cached yet: one read first
        assert (seen.reads, seen.claims) == (1, 1)
        for _ in range(3):
            await _admit(admission, welfare)
        assert (seen.reads, seen.claims) == (1, 4)  # warm: the claim alone

        # A key another node registered a moment ago: a kid the cache does not hold
        # is loaded; the claim's generation has moved, so the checks run once more.
        fresh = generate_private_key("EdDSA")
        there.registry.add_key(
            "welfare-office", KeyCreate(jwk=public_jwk(fresh)), actor="other-node"
        )
        await _admit(admission, fresh)
        assert (seen.reads, seen.claims) == (1, 5)

        # Revoked there: the cache still says valid, the claim's generation says no.
        there.registry.revoke_key(key_id(fresh), "laptop lost", actor="other-node")
        usage = Usage(datetime.now(UTC))
        counted = quota_counts(here.engine, "welfare-person-lookup")
        jtis = _jtis(here.engine)
        with pytest.raises(AuthError) as caught:
            await _admit(admission, fresh)
        assert caught.value.code == "key_revoked"
        assert _jtis(here.engine) == jtis + 1  # the token is spent
        assert quota_counts(here.engine, "welfare-person-lookup") == counted  # given back
        assert counted[usage.minute] >= 5

        # A refusal by the cache is confirmed by a fresh read, and claims nothing.
        with pytest.raises(AuthError) as caught:
            await _admit(admission, demo_key)
        assert caught.value.code == "unknown_key"
        assert (seen.reads, seen.claims) == (2, 6)

        # A system another node registered a moment ago: a lookup that found no
        # system is never kept, so the next exchange reads it and is admitted.
        new_app = {"sub": "intake-app"}
        with pytest.raises(AuthError) as caught:
            await _admit(admission, welfare, claims=new_app)
        assert caught.value.code == "unknown_system"
        assert (seen.reads, seen.claims) == (3, 6)
        there.registry.add_system(
            "welfare-office", SystemCreate(system_id="intake-app"), actor="other-node"
        )
        _, reservation, _ = await _admit(admission, welfare, claims=new_app)
        assert reservation is not None
        assert (seen.reads, seen.claims) == (3, 7)

        # A refusal the cache does hold (the department was suspended) that another
        # node has since lifted: the fresh read sees the move, and it is admitted.
        _set_status(there, "tax-authority", "suspended")
        tax = _key(here, "tax-authority")
        as_tax = {"iss": "tax-authority", "sub": "tax-status-service"}
        for _ in range(2):  # the second refusal comes from the cache, confirmed by a read
            with pytest.raises(AuthError) as caught:
                await _admit(admission, tax, claims=as_tax)
            assert caught.value.code == "department_inactive"
        assert (seen.reads, seen.claims) == (5, 7)
        _set_status(there, "tax-authority", "active")
        await _admit(admission, tax, claims=as_tax)
        assert (seen.reads, seen.claims) == (6, 8)

        await here.stop()

    asyncio.run(main())


def test_an_agreement_signed_on_another_node_takes_its_quota_from_the_next_exchange(
    nodes: tuple[Services, Services],
) -> None:
    here, there = nodes
    welfare = _demo_key(here)
    body = request_body(agreement="welfare-late")

    async def main() -> None:
        await here.start()
        admission = here.exchange.admission
        department, reservation, _ = await _admit(admission, welfare, body)
        assert reservation is None  # no such agreement (yet): the policy refuses it later
        _sign_late_agreement(there)
        department, reservation, _ = await _admit(admission, welfare, body)
        assert department.id == "welfare-office"
        assert reservation is not None and reservation.agreement_id == "welfare-late"
        usage = Usage(datetime.now(UTC))
        assert quota_counts(here.engine, "welfare-late")[usage.day] == 1
        await here.stop()

    asyncio.run(main())


def _key(services: Services, department: str) -> Any:
    return load_private_key_pem(services.settings.data_dir / "demo-keys" / f"{department}.pem")


def _demo_key(services: Services) -> Any:
    return _key(services, "welfare-office")


def _set_status(services: Services, department: str, status: str) -> None:
    """As an administrator's change would: the row and the generation in one transaction."""
    with services.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE department SET status = :s WHERE id = :d"),
            {"s": status, "d": department},
        )
        bump_generation(conn)


def _sign_late_agreement(services: Services) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    window = (
        (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        (now + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
    )
    doc = agreement_doc(
        "welfare-late",
        "signed while the gateway was running",
        "civil-registry",
        "welfare-office",
        ("benefit-eligibility", "Social Welfare Act s.12"),
        "confidential",
        [],
        [{"id": "person", "model": "person@1", "fields": {"given_name": {"operation": "pass"}}}],
        window,
    )
    add_agreement(services, json.loads(json.dumps(doc)))
