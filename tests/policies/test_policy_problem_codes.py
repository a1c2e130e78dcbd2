"""Every problem code the policy routes can answer is in their OpenAPI and the docs.

Read from the source: each ``code="x"`` keyword, each ``default_code = "x"`` and
each state code passed to ``require_status`` in the modules the policy routes
run, so a new code cannot be raised without being documented.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.api.openapi import PROBLEM_CODES_KEY
from gateway.services import Services
from tests.policies.test_api_policy import api

pytestmark = pytest.mark.opa
__all__ = ["api"]  # the fixture, used by name

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    *sorted((ROOT / "gateway/policy").glob("*.py")),
    ROOT / "gateway/api/routes_policy.py",
]
#: Raised in those modules, but never answered by a policy route, and why.
NOT_ANSWERED = {
    "policy_denied": "the exchange's 403; the workflow never decides an exchange",
    "policy_state_conflict": "the base class's default; every raise names its state code",
    "internal_error": "AccordError's default, not raised here",
}


def raised_codes() -> set[str]:
    codes: set[str] = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant):
                        codes.add(str(kw.value.value))
                name = getattr(node.func, "id", "")
                if name == "require_status" and isinstance(node.args[-1], ast.Constant):
                    codes.add(str(node.args[-1].value))
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "default_code" for t in node.targets
            ):
                assert isinstance(node.value, ast.Constant)
                codes.add(str(node.value.value))
    return codes - set(NOT_ANSWERED)


def test_every_policy_problem_code_is_documented(api: tuple[TestClient, Services]) -> None:
    client, _ = api
    codes = raised_codes()
    assert {"policy_not_draft", "policy_not_rejectable", "four_eyes_required"} <= codes
    paths = client.get("/openapi.json").json()["paths"]
    listed = {
        code
        for path, item in paths.items()
        if path.startswith("/v1/policies")
        for op in item.values()
        for response in op.get("responses", {}).values()
        for code in response.get(PROBLEM_CODES_KEY, [])
    }
    assert codes - listed == set()
    docs = (ROOT / "docs/policy-engines.md").read_text(encoding="utf-8")
    assert {c for c in codes if f"`{c}`" not in docs} == set()
    # Each route declares its own: reject answers policy_not_rejectable, list does not.
    reject = paths["/v1/policies/{version}/reject"]["post"]["responses"]["409"]
    assert reject[PROBLEM_CODES_KEY] == ["policy_not_rejectable"]
    assert "409" not in paths["/v1/policies"]["get"]["responses"]
