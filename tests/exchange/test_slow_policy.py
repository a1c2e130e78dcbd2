"""A policy slow on a rare input costs that exchange, not the gateway.

An officer's policy (through the real four-eyes workflow) takes seconds on one
purpose code no probe uses, so it passes the proposal checks. Over HTTP, an
exchange for that purpose is refused 503 ``policy_error`` once the evaluation
overruns the policy timeout, and exchanges sent while it runs are answered
before it is: the evaluation runs in an evaluator process, which is killed and
replaced; the gateway's own process never waits for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from examples.launch import Departments
from gateway.client import AccordClientError
from gateway.services import Services
from tests._support.gateway import Gateway, audit_docs, sqlite_gateway
from tests.exchange.conftest import subject_with
from tests.policies.workflow_support import bundle_with

AGREEMENT, DATASET, PURPOSE = "welfare-person-lookup", "person", "benefit-eligibility"
RARE_PURPOSE = "deep-archive-review"
#: Counting thirty million numbers takes seconds, and regorus' VM does not count
#: a built-in against its instruction limit.
SLOW_RULE = f"""package accord.exchange

deny_reasons contains reason("invalid_input", sprintf("%d numbers", [counted])) if {{
\tinput.request.purpose == "{RARE_PURPOSE}"
\tcounted := count(numbers.range(1, 30000000))
}}
"""
TIMEOUT_MS = 2000


def _activate_slow_policy(services: Services) -> None:
    services.policy.ensure_initial(services.settings.policy_dir)
    bundle = bundle_with({"slow.rego": SLOW_RULE})
    proposed = services.policy.propose(bundle, actor="user:alice", note="slow on one purpose")
    assert proposed.status == "checked", proposed
    services.policy.approve(bundle.version, actor="user:bob")
    assert services.policy.activate(bundle.version, actor="user:bob").active


@pytest.fixture(scope="module")
def gw(departments: Departments, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-slow-policy")
    env = {"ACCORD_POLICY_TIMEOUT_MS": str(TIMEOUT_MS)}
    with sqlite_gateway(
        data, departments.env, prepare=_activate_slow_policy, extra_env=env
    ) as gateway:
        yield gateway


def _ask(gw: Gateway, purpose: str) -> Any:
    return gw.client("welfare-office").exchange(
        agreement=AGREEMENT,
        dataset=DATASET,
        purpose=purpose,
        fields=["given_name"],
        query={"kind": "record", "subject": subject_with("civil")},
    )


def test_exchanges_are_answered_while_a_slow_evaluation_runs(gw: Gateway) -> None:
    assert _ask(gw, PURPOSE).records  # the policy is active and decides
    answered: list[tuple[str, float]] = []
    refused: list[AccordClientError] = []

    def rare() -> None:
        try:
            _ask(gw, RARE_PURPOSE)
        except AccordClientError as exc:
            refused.append(exc)
        answered.append(("rare", time.monotonic()))

    slow = threading.Thread(target=rare)
    slow.start()
    time.sleep(0.3)  # let it reach the policy
    for _ in range(3):
        assert _ask(gw, PURPOSE).records
        answered.append(("plain", time.monotonic()))
    slow.join(60)
    assert not slow.is_alive()
    # Every plain exchange sent after the slow one was answered before it.
    assert [kind for kind, _ in sorted(answered, key=lambda a: a[1])][-1] == "rare"
    [error] = refused
    assert (error.status, error.code) == (503, "policy_error"), error.problem
    reasons = error.problem["reasons"]
    assert [r["code"] for r in reasons] == ["policy_error"]
    assert f"the evaluation overran {TIMEOUT_MS} ms" in reasons[0]["message"]
    [entry] = [
        d
        for d in audit_docs(gw.env["ACCORD_DATABASE_URL"])
        if d.get("exchange_id") == error.exchange_id
    ]
    assert (entry["event"], entry["status"]) == ("denial", 503), entry
    assert entry["reasons"] == ["policy_error"], entry


def test_the_gateway_is_ready_again_after_an_evaluator_was_killed(gw: Gateway) -> None:
    with pytest.raises(AccordClientError) as err:
        _ask(gw, RARE_PURPOSE)
    assert err.value.code == "policy_error"
    ready = httpx.get(f"{gw.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["policy_engine"] == "ok"
    # More exchanges than evaluators: the one started in place of the killed one decides too.
    for _ in range(4):
        assert _ask(gw, PURPOSE).records
