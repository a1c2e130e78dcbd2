"""Failed authentications beyond a budget are recorded folded: one entry a second of
flood, with the count by problem code; every failure is still accounted for."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from audit.entry import verify_entry_fields
from examples.launch import Departments
from gateway.exchange.failure_budget import FailureBudget
from gateway.jose import generate_private_key
from tests._support.gateway import Gateway, running_gateway
from tests.exchange.attack_support import (
    expect_problem,
    good_token,
    key_id,
    post_exchange,
    request_body,
    sign_token,
    token_claims,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_is_a_token_bucket_of_entries() -> None:
    clock = _Clock()
    budget = FailureBudget(3, clock=clock)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.34  # a little over one entry's worth
    assert [budget.take(), budget.take()] == [True, False]
    clock.now += 60  # refills to the burst, not beyond
    assert [budget.take() for _ in range(4)] == [True, True, True, False]


def test_a_budget_of_zero_records_every_failure_alone() -> None:
    budget = FailureBudget(0, clock=_Clock())
    assert all(budget.take() for _ in range(1000))


def test_folded_failures_drain_into_one_valid_entry_and_start_again() -> None:
    budget = FailureBudget(1, clock=_Clock())
    assert budget.drain() is None
    assert budget.fold("signature_invalid", T0) is True  # the first opens a window
    assert budget.fold("token_expired", T0 + timedelta(milliseconds=5)) is False
    assert budget.fold("signature_invalid", T0 + timedelta(milliseconds=900)) is False
    entry = budget.drain()
    assert entry == {
        "event": "auth_failure",
        "outcome": "folded",
        "actor": "anonymous",
        "status": 401,
        "detail": {
            "failures": 3,
            "first": "2026-06-01T12:00:00.000Z",
            "last": "2026-06-01T12:00:00.900Z",
            "codes": ["signature_invalid:2", "token_expired:1"],
        },
    }
    verify_entry_fields(entry)  # what the audit log will take
    assert budget.drain() is None and budget.folded == 0
    assert budget.fold("missing_token", T0) is True  # a new window


@pytest.fixture(scope="module")
def flood_gateway(
    departments: Departments, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-flood")
    with running_gateway(
        db_url=f"sqlite:///{data / 'accord.db'}",
        data_dir=data,
        departments_env=departments.env,
        extra_env={"ACCORD_AUTH_FAILURE_ENTRIES_PER_S": "5"},
    ) as g:
        yield g


def _auth_failures(db: Path) -> list[dict[str, object]]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT data FROM audit_entries ORDER BY seq").all()
    finally:
        engine.dispose()
    entries = [json.loads(bytes(r[0])) for r in rows]
    return [e for e in entries if e["event"] == "auth_failure"]


def test_a_flood_of_bad_tokens_is_answered_alike_and_accounted_for_in_few_entries(
    flood_gateway: Gateway,
) -> None:
    gw = flood_gateway
    stranger = generate_private_key("EdDSA")
    kid = key_id(gw.key("welfare-office"))
    n = 60
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            body = request_body()
            headers = {"Content-Type": "application/json"}
            if i % 3:
                token = sign_token(stranger, token_claims(body), kid=kid)
                headers["Authorization"] = f"Bearer {token}"
            r = client.post(gw.url + "/v1/exchanges", content=body, headers=headers)
            code = "signature_invalid" if i % 3 else "missing_token"
            doc = expect_problem(r, 401, code)  # the same answer, folded or not
            assert doc["exchange_id"]
    elapsed = time.monotonic() - started
    time.sleep(1.5)  # past the fold window: the last folded entry is written

    failures = _auth_failures(gw.data_dir / "accord.db")
    alone = [e for e in failures if e["outcome"] == "refused"]
    folded = [e for e in failures if e["outcome"] == "folded"]
    assert len(alone) <= 5 + 5 * elapsed + 1  # the burst, plus what refilled meanwhile
    assert folded, "the flood was folded"
    by_code: dict[str, int] = {}
    for e in folded:
        detail = e["detail"]
        assert isinstance(detail, dict)
        for pair in detail["codes"]:
            code, count = pair.rsplit(":", 1)
            by_code[code] = by_code.get(code, 0) + int(count)
        assert sum(int(p.rsplit(":", 1)[1]) for p in detail["codes"]) == detail["failures"]
    for e in alone:
        by_code[str(e["problem"])] = by_code.get(str(e["problem"]), 0) + 1
    assert by_code == {"missing_token": n // 3, "signature_invalid": n - n // 3}

    body = request_body()  # a good exchange is unaffected
    assert post_exchange(gw, good_token(gw, body), body).status_code == 200
    out = gw.audit_cli("verify")
    assert out.returncode == 0, out.stdout + out.stderr


def test_replaying_one_captured_request_does_not_get_around_the_budget(
    flood_gateway: Gateway,
) -> None:
    """Its signature verifies, but anyone who saw the request holds it: each replay
    must not cost the log an entry and a sync of its own."""
    gw = flood_gateway
    body = request_body()
    token = good_token(gw, body)
    assert post_exchange(gw, token, body).status_code == 200
    before = len(_auth_failures(gw.data_dir / "accord.db"))
    n = 40
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            r = client.post(
                gw.url + "/v1/exchanges",
                content=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            expect_problem(r, 401, "token_replayed")
    elapsed = time.monotonic() - started
    time.sleep(1.5)  # past the fold window

    failures = _auth_failures(gw.data_dir / "accord.db")[before:]
    alone = [e for e in failures if e["outcome"] == "refused"]
    assert len(alone) <= 5 + 5 * elapsed + 1
    assert all(e["actor"] == "welfare-office/benefits-app" for e in alone)
    folded = sum(
        int(pair.rsplit(":", 1)[1])
        for e in failures
        if e["outcome"] == "folded"
        for pair in e["detail"]["codes"]  # type: ignore[index]
        if pair.startswith("token_replayed:")
    )
    assert folded > 0 and folded + len(alone) == n


def test_a_gateway_that_stops_mid_flood_writes_the_last_folded_window(tmp_path: Path) -> None:
    """The window's entry is due a second after its first failure; a gateway stopping
    before then writes it on the way out, before the audit log closes."""
    from tests._support.gateway import seeded_services

    db = tmp_path / "accord.db"
    services = seeded_services(f"sqlite:///{db}", tmp_path)

    async def serve_then_stop() -> None:
        await services.start()
        for code in ("signature_invalid", "signature_invalid", "missing_token"):
            services.exchange.refusals.fold(code)
        await services.stop()

    try:
        asyncio.run(serve_then_stop())
    finally:
        services.close()
    folded = [e for e in _auth_failures(db) if e["outcome"] == "folded"]
    assert len(folded) == 1
    detail = folded[0]["detail"]
    assert isinstance(detail, dict)
    assert detail["failures"] == 3
    assert detail["codes"] == ["missing_token:1", "signature_invalid:2"]
