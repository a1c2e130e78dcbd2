"""Every problem code the exchange API can answer is documented, read from the source.

The list drifted once: codes the flow raised were in neither docs/exchange.md's
table nor the OpenAPI of ``POST /v1/exchanges``. So this test reads every
``raise SomeAccordError(..., code="x")`` (or the class's ``default_code``) in
the modules each route runs, the codes connectors hand up through the fetch
step, and the policy's deny codes, and fails on any code missing from the
route's ``x-problem-codes`` at its status or from the docs' table row of that
status.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import connectors.interface as connector_errors
from gateway.api.app import create_app
from gateway.api.openapi import PROBLEM_CODES_KEY
from gateway.exchange.fetch_step import connector_fault
from gateway.policy.engine import DENY_CODES, POLICY_ERROR
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXCHANGE, RECEIPT, ACCESSES = (
    ("/v1/exchanges", "post"),
    ("/v1/exchanges/{exchange_id}/receipt", "get"),
    ("/v1/subjects/{subject_key}/accesses", "get"),
)
TOKEN_ROUTES = (EXCHANGE, RECEIPT, ACCESSES)

#: Which routes run which modules (module: routes), or which functions of a module.
MODULES: dict[str, tuple[tuple[str, str], ...]] = {
    "gateway/auth/requests.py": TOKEN_ROUTES,
    "gateway/exchange/admission.py": (EXCHANGE,),
    "gateway/exchange/bindings.py": (EXCHANGE,),
    "gateway/exchange/counters.py": TOKEN_ROUTES,  # every request token's jti is claimed
    "gateway/exchange/fetch_step.py": (EXCHANGE,),
    "gateway/exchange/release_step.py": (EXCHANGE,),
    "gateway/exchange/request_step.py": (EXCHANGE,),
    "gateway/exchange/service.py": (EXCHANGE,),
    "gateway/exchange/store_steps.py": TOKEN_ROUTES,
    "gateway/exchange/pg_steps.py": (EXCHANGE,),
    "gateway/exchange/reads.py": (RECEIPT, ACCESSES),
    "gateway/exchange/receipts.py": (RECEIPT,),
    "gateway/exchange/subjects.py": (ACCESSES,),
    "gateway/policy/engine.py": (EXCHANGE,),
    "gateway/release.py": (EXCHANGE,),
    "gateway/release_aggregates.py": (EXCHANGE,),
    "gateway/release_obligations.py": (EXCHANGE,),
    "gateway/api/app.py": (EXCHANGE,),
    "gateway/api/problems.py": TOKEN_ROUTES,
}
FUNCTIONS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("gateway/api/routes_exchange.py", "post_exchange"): (EXCHANGE,),
    ("gateway/api/routes_exchange.py", "_system"): (RECEIPT, ACCESSES),
    ("gateway/api/routes_exchange.py", "subject_accesses"): (ACCESSES,),
    # The caller's key, department and system; ``gateway.auth.requests`` answers 401.
    ("gateway/registry/callers.py", "verify_caller"): TOKEN_ROUTES,
    # Admission's first step: the log is not known to be damaged.
    ("gateway/auditing.py", "verify_log_intact"): (EXCHANGE,),
}
#: Codes raised in those modules that no route answers, and why.
NOT_ANSWERED = {
    "receipt_invalid": "verify_receipt is the client's check of a receipt",
}
#: Functions of those modules that only the admin routes run.
ADMIN_ONLY = {
    "gateway/exchange/bindings.py": {
        "put_binding",
        "put_consumer_mapping",
        "_check_connector_config",
    }
}


@dataclass(frozen=True)
class Raised:
    code: str
    status: int
    where: str


def _error_classes() -> dict[str, tuple[int, str]]:
    """Every AccordError subclass in gateway/: name -> (status, default code)."""
    found: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            attrs: dict[str, Any] = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign | ast.Assign) and stmt.value is not None:
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    for t in targets:
                        if isinstance(t, ast.Name) and isinstance(stmt.value, ast.Constant):
                            attrs[t.id] = stmt.value.value
            bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
            found[node.name] = (bases, attrs)

    def resolve(name: str, attr: str) -> Any:
        bases, attrs = found[name]
        if attr in attrs:
            return attrs[attr]
        for base in bases:
            if base in found and (value := resolve(base, attr)) is not None:
                return value
        return None

    def is_error(name: str) -> bool:
        return name == "AccordError" or any(
            b in found and is_error(b) for b in found.get(name, ([], {}))[0]
        )

    return {
        name: (int(resolve(name, "status")), str(resolve(name, "default_code")))
        for name in found
        if is_error(name)
    }


def _raised_in(tree: ast.AST, where: str, classes: dict[str, tuple[int, str]]) -> Iterator[Raised]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else None
        kwargs = {k.arg: k.value for k in node.keywords}
        if name in classes:
            status, default = classes[name]
            given = kwargs.get("code")
            if given is None:
                yield Raised(default, status, where)
            elif isinstance(given, ast.Constant):
                yield Raised(str(given.value), status, where)
        elif name == "problem_response" and isinstance(kwargs.get("code"), ast.Constant):
            status_node = kwargs.get("status")
            if isinstance(status_node, ast.Constant):
                yield Raised(str(kwargs["code"].value), int(status_node.value), where)  # type: ignore[union-attr]


def collected() -> dict[tuple[str, str], set[Raised]]:
    """Route -> every (code, status) its modules can answer with."""
    classes = _error_classes()
    out: dict[tuple[str, str], set[Raised]] = {r: set() for r in TOKEN_ROUTES}
    for rel, routes in MODULES.items():
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                node.body = [
                    f
                    for f in node.body
                    if not (isinstance(f, ast.FunctionDef) and f.name in ADMIN_ONLY.get(rel, ()))
                ]
        tree.body = [
            f
            for f in tree.body
            if not (isinstance(f, ast.FunctionDef) and f.name in ADMIN_ONLY.get(rel, ()))
        ]
        for raised in _raised_in(tree, rel, classes):
            for route in routes:
                out[route].add(raised)
    for (rel, function), routes in FUNCTIONS.items():
        tree = ast.parse((ROOT / rel).read_text())
        defs = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
        ]
        assert defs, f"{rel} has no function {function}: update FUNCTIONS"
        for raised in _raised_in(defs[0], f"{rel}:{function}", classes):
            status = 401 if rel.startswith("gateway/registry/") else raised.status
            for route in routes:
                out[route].add(Raised(raised.code, status, raised.where))
    # Connector faults reach the caller through the fetch step's mapping.
    errors = [
        obj
        for obj in vars(connector_errors).values()
        if isinstance(obj, type) and issubclass(obj, connector_errors.ConnectorError)
    ]
    for cls in errors:
        fault = connector_fault(cls("probe"))
        out[EXCHANGE].add(Raised(fault.code, fault.status, f"connectors: {cls.__name__}"))
    return out


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("openapi")
    settings = Settings(dev_mode=True, data_dir=data, database_url=f"sqlite:///{data / 'a.db'}")
    return create_app(settings).openapi()


def documented_table() -> dict[int, str]:
    """docs/exchange.md's problem table: status -> the row's text."""
    text = (ROOT / "docs" / "exchange.md").read_text()
    section = text.split("## Problem codes", 1)[1]
    return {
        int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d{3}) \| (.+) \|$", section, re.M)
    }


def _openapi_codes(spec: dict[str, Any], route: tuple[str, str], status: int) -> list[str]:
    response = spec["paths"][route[0]][route[1]]["responses"].get(str(status), {})
    return list(response.get(PROBLEM_CODES_KEY, []))


def test_the_collector_sees_the_codes_it_must() -> None:
    """The collector itself: codes known to be raised each way are found."""
    codes = {(r.code, r.status) for r in collected()[EXCHANGE]}
    assert ("invalid_token", 401) in codes  # literal code= in gateway.auth.requests
    assert ("wrong_department_key", 401) in codes  # registry, answered as 401
    assert ("policy_denied", 403) in codes  # PolicyDenied's default_code
    assert ("release_type_mismatch", 422) in codes  # ReleaseError(code=...)
    assert ("body_too_large", 413) in codes  # the body-limit middleware
    assert ("connector_timeout", 504) in codes  # a connector fault


@pytest.mark.parametrize("route", TOKEN_ROUTES, ids=lambda r: f"{r[1].upper()} {r[0]}")
def test_every_raised_code_is_in_the_openapi_of_its_route(
    spec: dict[str, Any], route: tuple[str, str]
) -> None:
    found = collected()[route]
    missing = sorted(
        f"{r.status} {r.code} ({r.where})"
        for r in found
        if r.code not in NOT_ANSWERED and r.code not in _openapi_codes(spec, route, r.status)
    )
    assert not missing, f"undocumented in the OpenAPI of {route}: {missing}"


@pytest.mark.parametrize("route", TOKEN_ROUTES, ids=lambda r: f"{r[1].upper()} {r[0]}")
def test_every_raised_code_is_in_the_docs_table(route: tuple[str, str]) -> None:
    table = documented_table()
    found = collected()[route]
    missing = sorted(
        f"{r.status} {r.code} ({r.where})"
        for r in found
        if r.code not in NOT_ANSWERED and f"`{r.code}`" not in table.get(r.status, "")
    )
    assert not missing, f"undocumented in docs/exchange.md's problem table: {missing}"


def test_every_deny_reason_is_documented(spec: dict[str, Any]) -> None:
    reasons = DENY_CODES - {POLICY_ERROR}
    described = spec["paths"]["/v1/exchanges"]["post"]["responses"]["403"]["description"]
    row = documented_table()[403]
    assert sorted(c for c in reasons if c not in described) == []
    assert sorted(c for c in reasons if f"`{c}`" not in row) == []
    assert "policy_error" in _openapi_codes(spec, EXCHANGE, 503)


def test_a_misconfigured_connector_is_a_server_fault(spec: dict[str, Any]) -> None:
    """An unusable connector is the operator's fault: a 500, never a 4xx or 502."""
    for cls in (connector_errors.ConnectorConfigError, connector_errors.UnknownField):
        fault = connector_fault(cls("probe"))
        assert (fault.status, fault.code) == (500, "connector_misconfigured")
    assert "connector_misconfigured" in _openapi_codes(spec, EXCHANGE, 500)
    assert "`connector_misconfigured`" in documented_table()[500]
    assert "`connector_config_invalid`" not in documented_table()[422]


def test_the_openapi_names_no_code_the_gateway_cannot_answer(spec: dict[str, Any]) -> None:
    """The other way round: a documented code nothing raises is stale."""
    for route in TOKEN_ROUTES:
        raised = {r.code for r in collected()[route]}
        responses = spec["paths"][route[0]][route[1]]["responses"]
        listed = {c for r in responses.values() for c in r.get(PROBLEM_CODES_KEY, [])}
        assert sorted(listed - raised) == [], route
