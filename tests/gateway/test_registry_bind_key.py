"""Binding a department's existing key to one of its systems, over HTTP, CLI and demo seed.

Deployments from before keys could be bound hold only unbound keys, and their
citizen portal is refused (``wrong_system_key``) once a system with capabilities
takes only a key bound to it. Binding the key the portal already holds lets it
in again without a new key pair; every other case is refused with its own code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from gateway.db import session_scope
from gateway.demo import seed
from gateway.jose import generate_private_key, load_private_key_pem, public_jwk
from gateway.services import Services, build_services
from gateway.settings import Settings
from tests._support.gateway import Gateway, running_gateway, start_gateway, stop
from tests._support.servers import fresh_database
from tests.exchange.attack_support import expect_problem, read_accesses

PORTAL = "citizen-portal"
ACCESSES = "/v1/subjects/85442997376/accesses"


def _unbind_demo_keys(services: Services) -> None:
    """The store as a deployment from before binding left it: every key unbound."""
    with session_scope(services.engine) as s:
        s.connection().execute(sa.text("UPDATE department_key SET system_id = NULL"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-bind-key")
    if request.param == "sqlite":
        db_url = f"sqlite:///{data / 'accord.db'}"
    else:
        db_url = fresh_database(request.getfixturevalue("pg_server_url"))
    with running_gateway(
        db_url=db_url, data_dir=data, departments_env={}, prepare=_unbind_demo_keys
    ) as g:
        yield g


def _admin(
    gw: Gateway, method: str, path: str, body: Any = None, url: str | None = None
) -> httpx.Response:
    return httpx.request(method, (url or gw.url) + path, json=body, headers=gw.staff(), timeout=30)


def _bind(gw: Gateway, dept: str, kid: str, system: str, url: str | None = None) -> httpx.Response:
    return _admin(gw, "POST", f"/v1/departments/{dept}/keys/{kid}/bind", {"system": system}, url)


def _new_key(gw: Gateway, dept: str, **fields: Any) -> str:
    r = _admin(gw, "POST", f"/v1/departments/{dept}/keys", {"jwk": _jwk(), **fields})
    assert r.status_code == 201, r.text
    kid: str = r.json()["kid"]
    return kid


def _jwk() -> dict[str, Any]:
    return public_jwk(generate_private_key("EdDSA"))


def _key_bound(db_url: str) -> list[dict[str, Any]]:
    """The ``key_bound`` audit entries, as the gateway stored them."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT data FROM audit_entries WHERE event = 'key_change' ORDER BY seq")
            ).scalars()
            docs = [json.loads(bytes(r)) for r in rows]
    finally:
        engine.dispose()
    return [d for d in docs if d["outcome"] == "key_bound"]


def _entries_of(gw: Gateway, kid: str) -> list[dict[str, Any]]:
    return [e for e in _key_bound(gw.env["ACCORD_DATABASE_URL"]) if e["detail"]["kid"] == kid]


def _refused(gw: Gateway, dept: str, kid: str, system: str, status: int, code: str) -> str:
    """Bind, expect the refusal, and check it recorded nothing; the problem's detail."""
    before = len(_key_bound(gw.env["ACCORD_DATABASE_URL"]))
    doc = expect_problem(_bind(gw, dept, kid, system), status, code)
    assert len(_key_bound(gw.env["ACCORD_DATABASE_URL"])) == before
    detail: str = doc["detail"]
    return detail


def _system_of(gw: Gateway, dept: str, kid: str) -> str | None:
    keys = _admin(gw, "GET", f"/v1/departments/{dept}/keys").json()
    found: str | None = next(k["system_id"] for k in keys if k["kid"] == kid)
    return found


# -- the upgrade path ----------------------------------------------------------------------


def test_binding_the_portals_old_key_lets_it_in_on_every_node(gw: Gateway) -> None:
    key = gw.key(PORTAL)
    kid = public_jwk(key)["kid"]
    # Before: the unbound key cannot sign for a system with capabilities (and this
    # node now caches the key, department and system it read).
    expect_problem(read_accesses(gw, key, ACCESSES, sub="portal"), 401, "wrong_system_key")
    url, proc = start_gateway(gw.env, gw.data_dir)  # a second node makes the change
    try:
        r = _bind(gw, PORTAL, kid, "portal", url)
    finally:
        stop(proc)
    assert r.status_code == 200, r.text
    assert r.json()["kid"] == kid and r.json()["system_id"] == "portal"
    assert (
        read_accesses(gw, key, ACCESSES, sub="portal").status_code == 200
    )  # at once, on this node
    [entry] = _entries_of(gw, kid)
    assert entry["actor"] == "user:test-admin"
    assert entry["detail"] == {"department": PORTAL, "kid": kid, "system": "portal"}
    # Binding again to the same system changes nothing and records nothing.
    again = _bind(gw, PORTAL, kid, "portal")
    assert again.status_code == 200 and again.json()["system_id"] == "portal", again.text
    assert len(_entries_of(gw, kid)) == 1


# -- refusals --------------------------------------------------------------------------------


def test_unknown_department_key_or_system_is_404(gw: Gateway) -> None:
    kid = _new_key(gw, PORTAL)
    _refused(gw, "no-such-dept", kid, "portal", 404, "unknown_department")
    _refused(gw, PORTAL, "no-such-kid", "portal", 404, "unknown_key")
    _refused(gw, PORTAL, kid, "no-such-system", 404, "unknown_system")
    assert _system_of(gw, PORTAL, kid) is None


def test_another_departments_key_cannot_be_bound_to_the_portal(gw: Gateway) -> None:
    welfare = public_jwk(gw.key("welfare-office"))["kid"]
    assert "welfare-office" in _refused(gw, PORTAL, welfare, "portal", 409, "wrong_department_key")
    assert _system_of(gw, "welfare-office", welfare) is None


def test_revoked_key_cannot_be_bound(gw: Gateway) -> None:
    kid = _new_key(gw, PORTAL)
    r = _admin(gw, "POST", f"/v1/keys/{kid}/revoke", {"reason": "lost laptop"})
    assert r.status_code == 200, r.text
    _refused(gw, PORTAL, kid, "portal", 409, "key_revoked")
    assert _system_of(gw, PORTAL, kid) is None


def test_expired_key_cannot_be_bound(gw: Gateway) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    kid = _new_key(
        gw,
        PORTAL,
        not_before=(now - timedelta(days=2)).isoformat(),
        not_after=(now - timedelta(days=1)).isoformat(),
    )
    _refused(gw, PORTAL, kid, "portal", 409, "key_expired")
    assert _system_of(gw, PORTAL, kid) is None


def test_a_bound_key_is_never_moved_to_another_system(gw: Gateway) -> None:
    r = _admin(gw, "POST", f"/v1/departments/{PORTAL}/systems", {"system_id": "help-desk"})
    assert r.status_code == 201, r.text
    kid = _new_key(gw, PORTAL, system="help-desk")
    detail = _refused(gw, PORTAL, kid, "portal", 409, "key_bound_to_other_system")
    assert "help-desk" in detail
    assert _system_of(gw, PORTAL, kid) == "help-desk"


def test_a_disabled_system_takes_a_binding_as_it_takes_a_new_key(gw: Gateway) -> None:
    r = _admin(gw, "POST", f"/v1/departments/{PORTAL}/systems", {"system_id": "kiosk"})
    assert r.status_code == 201, r.text
    assert _admin(gw, "POST", f"/v1/departments/{PORTAL}/systems/kiosk/disable").status_code == 200
    _new_key(gw, PORTAL, system="kiosk")  # add-key takes a disabled system
    kid = _new_key(gw, PORTAL)
    r = _bind(gw, PORTAL, kid, "kiosk")
    assert r.status_code == 200 and r.json()["system_id"] == "kiosk", r.text


def test_binding_needs_the_admin_role_and_a_system(gw: Gateway) -> None:
    kid = _new_key(gw, PORTAL)
    path = f"{gw.url}/v1/departments/{PORTAL}/keys/{kid}/bind"
    r = httpx.post(path, json={"system": "portal"}, headers=gw.staff("officer"), timeout=30)
    expect_problem(r, 403, "role_required")
    assert httpx.post(path, json={"system": "portal"}, timeout=30).status_code == 401
    expect_problem(
        _admin(gw, "POST", f"/v1/departments/{PORTAL}/keys/{kid}/bind", {}),
        422,
        "validation_failed",
    )
    assert _system_of(gw, PORTAL, kid) is None


# -- command line ---------------------------------------------------------------------------


def test_cli_binds_an_existing_key(cli: Callable[..., str], tmp_path: Path, db_url: str) -> None:
    cli("db", "upgrade")
    cli("dept", "register", "portal-dept", "--name", "Portal", "--clearance", "internal")
    cli("dept", "add-system", "portal-dept", "portal", "--capability", "citizen_portal")
    cli("dept", "add-system", "portal-dept", "desk")
    jwk = cli("keys", "generate", "--out", str(tmp_path / "portal.pem"))
    (tmp_path / "portal.jwk").write_text(jwk)
    cli("dept", "add-key", "portal-dept", str(tmp_path / "portal.jwk"))
    kid = json.loads(jwk)["kid"]
    out = cli("dept", "bind-key", "portal-dept", "--system", "portal", "--", kid)
    assert "bound key" in out and kid in out and "portal" in out
    cli("dept", "bind-key", "portal-dept", "--system", "portal", "--", kid)  # idempotent
    out = cli("dept", "bind-key", "portal-dept", "--system", "desk", "--", kid, ok=False)
    assert "key_bound_to_other_system" in out
    services = build_services(
        Settings(dev_mode=True, database_url=db_url, data_dir=tmp_path / "data")
    )
    try:
        assert [k.system_id for k in services.registry.list_keys("portal-dept")] == ["portal"]
    finally:
        services.close()


# -- accord demo on a data directory seeded before binding ---------------------------------


def _demo_portal_key(services: Services) -> str | None:
    """The system the demo portal's key (its PEM under the data directory) is bound to."""
    key = load_private_key_pem(services.settings.data_dir / "demo-keys" / f"{PORTAL}.pem")
    kid = public_jwk(key)["kid"]
    return next(k.system_id for k in services.registry.list_keys(PORTAL) if k.kid == kid)


def test_demo_seed_binds_the_portal_key_of_an_old_data_dir(db_url: str, tmp_path: Path) -> None:
    services = build_services(Settings(dev_mode=True, database_url=db_url, data_dir=tmp_path))
    try:
        seed(services)
        assert _demo_portal_key(services) == "portal"
        _unbind_demo_keys(services)
        assert _demo_portal_key(services) is None
        summary = seed(services)
        assert summary["departments_created"] == []
        assert _demo_portal_key(services) == "portal"
        # Only the department whose spec binds its key is touched.
        assert all(
            k.system_id is None
            for dept in ("civil-registry", "welfare-office")
            for k in services.registry.list_keys(dept)
        )
        seed(services)  # idempotent: nothing more to bind, nothing more recorded
        bound = _key_bound(db_url)
        assert [(e["actor"], e["detail"]["system"]) for e in bound] == [("demo:seed", "portal")]
    finally:
        services.close()
