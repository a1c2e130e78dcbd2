"""Administrators' controls over who may call, end to end over HTTP on both stores.

A capability the gateway does not know is refused when written (it would be
stored and never match); a system's capabilities can be corrected; a department
can be suspended and a system disabled, each audited, and the very next
exchange on any node sees it; and a system's capabilities are tied to a key
bound to that system, so another system holding the department's key cannot
name it and take them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from examples.launch import Departments
from gateway.jose import PrivateKey, generate_private_key, public_jwk
from tests._support.gateway import Gateway, start_gateway, stop
from tests.exchange.attack_support import (
    expect_problem,
    good_token,
    post_exchange,
    read_accesses,
    request_body,
    sign_token,
    token_claims,
)
from tests.exchange.conftest import STORES, gateway_on_store

PORTAL = "citizen-portal"
SUBJECT = "85442997376"
ACCESSES = f"/v1/subjects/{SUBJECT}/accesses"


@pytest.fixture(scope="module", params=STORES)
def gw(
    request: pytest.FixtureRequest,
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-registry")
    with gateway_on_store(request, departments, data) as g:
        yield g


def _body() -> bytes:
    return request_body(fields=["given_name"])


def _admin(gw: Gateway, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, gw.url + path, json=body, headers=gw.staff(), timeout=30)


def _new_key(gw: Gateway, department: str, system: str | None = None) -> PrivateKey:
    key = generate_private_key("EdDSA")
    r = _admin(
        gw, "POST", f"/v1/departments/{department}/keys", {"jwk": public_jwk(key), "system": system}
    )
    assert r.status_code == 201, r.text
    assert r.json()["system_id"] == system
    return key


def _entries(gw: Gateway, event: str) -> list[dict[str, Any]]:
    """The audit entries of one kind, as the gateway stored them."""
    engine = sa.create_engine(gw.env["ACCORD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT data FROM audit_entries WHERE event = :e ORDER BY seq"),
                {"e": event},
            ).scalars()
            return [json.loads(bytes(r)) for r in rows]
    finally:
        engine.dispose()


# -- capabilities ----------------------------------------------------------------------


def test_unknown_capability_refused_and_nothing_stored(gw: Gateway) -> None:
    r = _admin(
        gw,
        "POST",
        f"/v1/departments/{PORTAL}/systems",
        {"system_id": "typo-portal", "capabilities": ["citizen-portal"]},
    )
    doc = expect_problem(r, 422, "unknown_capability")
    assert "citizen-portal" in doc["detail"] and "citizen_portal" in doc["detail"]
    listed = _admin(gw, "GET", f"/v1/departments/{PORTAL}/systems").json()
    assert "typo-portal" not in [s["system_id"] for s in listed]


def test_a_systems_capabilities_can_be_corrected(gw: Gateway) -> None:
    r = _admin(gw, "POST", f"/v1/departments/{PORTAL}/systems", {"system_id": "kiosk"})
    assert r.status_code == 201, r.text
    key = _new_key(gw, PORTAL, "kiosk")
    expect_problem(read_accesses(gw, key, ACCESSES, sub="kiosk"), 403, "citizen_portal_only")
    path = f"/v1/departments/{PORTAL}/systems/kiosk"
    expect_problem(
        _admin(gw, "PATCH", path, {"capabilities": ["portal"]}), 422, "unknown_capability"
    )
    r = _admin(gw, "PATCH", path, {"capabilities": ["citizen_portal"]})
    assert r.status_code == 200 and r.json()["capabilities"] == ["citizen_portal"], r.text
    assert read_accesses(gw, key, ACCESSES, sub="kiosk").status_code == 200  # at once: no restart
    changes = [e for e in _entries(gw, "department_change") if e["outcome"] == "system_changed"]
    assert changes[-1]["detail"]["capabilities"] == ["citizen_portal"]
    assert changes[-1]["actor"] == "user:test-admin"


def test_registry_changes_need_the_admin_role(gw: Gateway) -> None:
    officer = gw.staff("officer")
    for method, path, body in (
        ("POST", "/v1/departments/welfare-office/suspend", {"reason": "x"}),
        ("POST", "/v1/departments/welfare-office/reinstate", {"reason": "x"}),
        ("PATCH", "/v1/departments/welfare-office/systems/benefits-app", {"capabilities": []}),
        ("POST", "/v1/departments/welfare-office/systems/benefits-app/disable", None),
        ("POST", "/v1/departments/welfare-office/systems/benefits-app/enable", None),
    ):
        r = httpx.request(method, gw.url + path, json=body, headers=officer, timeout=30)
        assert r.status_code == 403, (path, r.text)
        r = httpx.request(method, gw.url + path, json=body, timeout=30)
        assert r.status_code == 401, (path, r.text)


# -- suspension and disabling ----------------------------------------------------------


def test_suspended_department_refused_on_every_node_at_once(gw: Gateway) -> None:
    body = _body()
    assert post_exchange(gw, good_token(gw, body), body).status_code == 200  # cached here
    url, proc = start_gateway(gw.env, gw.data_dir)  # a second node makes the change
    try:
        r = httpx.post(
            f"{url}/v1/departments/welfare-office/suspend",
            json={"reason": "key compromise under investigation"},
            headers=gw.staff(),
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["status"] == "suspended", r.text
    finally:
        stop(proc)
    try:
        body = _body()
        expect_problem(post_exchange(gw, good_token(gw, body), body), 401, "department_inactive")
        again = _admin(gw, "POST", "/v1/departments/welfare-office/suspend", {"reason": "again"})
        expect_problem(again, 409, "no_change")
    finally:
        r = _admin(gw, "POST", "/v1/departments/welfare-office/reinstate", {"reason": "cleared"})
        assert r.status_code == 200 and r.json()["status"] == "active", r.text
    body = _body()
    assert post_exchange(gw, good_token(gw, body), body).status_code == 200
    outcomes = [
        (e["outcome"], e["detail"]["reason"])
        for e in _entries(gw, "department_change")
        if e["outcome"] in ("department_suspended", "department_reinstated")
    ]
    assert outcomes[-2:] == [
        ("department_suspended", "key compromise under investigation"),
        ("department_reinstated", "cleared"),
    ]


def test_disabled_system_refused_until_enabled(gw: Gateway) -> None:
    path = "/v1/departments/welfare-office/systems/benefits-app"
    body = _body()
    assert post_exchange(gw, good_token(gw, body), body).status_code == 200
    r = _admin(gw, "POST", f"{path}/disable")
    assert r.status_code == 200 and r.json()["status"] == "disabled", r.text
    try:
        body = _body()
        expect_problem(post_exchange(gw, good_token(gw, body), body), 401, "unknown_system")
    finally:
        r = _admin(gw, "POST", f"{path}/enable")
        assert r.status_code == 200 and r.json()["status"] == "active", r.text
    body = _body()
    assert post_exchange(gw, good_token(gw, body), body).status_code == 200
    outcomes = [e["outcome"] for e in _entries(gw, "department_change")]
    assert [o for o in outcomes if "abled" in o][-2:] == ["system_disabled", "system_enabled"]
    expect_problem(_admin(gw, "POST", f"{path}/enable"), 409, "no_change")
    expect_problem(
        _admin(gw, "POST", "/v1/departments/welfare-office/systems/nope/disable"),
        404,
        "unknown_system",
    )


# -- a system's capabilities need its own key --------------------------------------------


def test_another_system_cannot_borrow_the_portals_capability(gw: Gateway) -> None:
    r = _admin(gw, "POST", f"/v1/departments/{PORTAL}/systems", {"system_id": "case-desk"})
    assert r.status_code == 201, r.text
    portal_key = gw.key(PORTAL)  # the demo key, bound to the portal system
    assert read_accesses(gw, portal_key, ACCESSES, sub="portal").status_code == 200
    # The portal's own key signs for nothing else.
    expect_problem(
        read_accesses(gw, portal_key, ACCESSES, sub="case-desk"), 401, "wrong_system_key"
    )
    # A department key bound to no system (what case-desk holds) cannot name the portal.
    shared = _new_key(gw, PORTAL)
    doc = expect_problem(read_accesses(gw, shared, ACCESSES, sub="portal"), 401, "wrong_system_key")
    assert "portal" in doc["detail"]
    # ... but still serves the department's systems without capabilities.
    expect_problem(read_accesses(gw, shared, ACCESSES, sub="case-desk"), 403, "citizen_portal_only")
    desk_key = _new_key(gw, PORTAL, "case-desk")
    expect_problem(read_accesses(gw, desk_key, ACCESSES, sub="portal"), 401, "wrong_system_key")


def test_a_key_bound_to_a_system_signs_only_for_it(gw: Gateway) -> None:
    r = _admin(gw, "POST", "/v1/departments/welfare-office/systems", {"system_id": "intake"})
    assert r.status_code == 201, r.text
    key = _new_key(gw, "welfare-office", "intake")
    body = _body()
    expect_problem(
        post_exchange(gw, sign_token(key, token_claims(body, sub="benefits-app")), body),
        401,
        "wrong_system_key",
    )
    body = _body()
    assert (
        post_exchange(gw, sign_token(key, token_claims(body, sub="intake")), body).status_code
        == 200
    )
    # Binding a key to a system the department does not have is refused.
    other = generate_private_key("EdDSA")
    r = _admin(
        gw,
        "POST",
        "/v1/departments/welfare-office/keys",
        {"jwk": public_jwk(other), "system": "nope"},
    )
    expect_problem(r, 404, "unknown_system")
