"""The policy routes' OpenAPI lists what they really answer to a bad body, and the
bundle limit is one a proposal can actually reach.

Sent for real over the app: malformed JSON (400 ``malformed_json``), a body
above the gateway's limit (413 ``body_too_large``) and a body that parses but is
invalid (422 ``validation_failed``); each answer's status and code must be in
that route's published responses. The bundle limit used to be twice the body
limit, so a bundle "within the limit" was refused as a too-large body.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api.openapi import PROBLEM_CODES_KEY
from gateway.policy.bundle import MAX_BUNDLE_BYTES
from gateway.services import Services
from tests.policies.test_api_policy import api, bearer, problem
from tests.policies.workflow_support import shipped_sources

pytestmark = pytest.mark.opa
__all__ = ["api"]  # the fixture, used by name

#: The policy routes that read a JSON body, and a body each refuses as invalid.
BODY_ROUTES: dict[str, dict[str, Any]] = {
    "/v1/policies": {"files": {}},
    "/v1/policies/{version}/impact": {"days": 0},
    "/v1/policies/{version}/reject": {"reason": ""},
}


def listed(spec: dict[str, Any], route: str, status: int) -> list[str]:
    responses = spec["paths"][route]["post"]["responses"]
    codes: list[str] = responses.get(str(status), {}).get(PROBLEM_CODES_KEY, [])
    return codes


def post_raw(client: TestClient, path: str, headers: dict[str, str], body: bytes) -> Any:
    return client.post(path, headers=headers | {"Content-Type": "application/json"}, content=body)


@pytest.mark.parametrize("route", sorted(BODY_ROUTES))
def test_bad_bodies_answer_what_the_openapi_lists(
    api: tuple[TestClient, Services], route: str
) -> None:
    client, services = api
    alice = bearer(services, "officer", "alice")
    spec = client.get("/openapi.json").json()
    shipped = client.get("/v1/policies/active", headers=alice).json()["version"]
    path = route.replace("{version}", shipped)
    too_large = b'{"note": "' + b"x" * services.settings.max_body_bytes + b'"}'
    answers = [
        (post_raw(client, path, alice, b'{"files": {'), 400, "malformed_json"),
        (post_raw(client, path, alice, too_large), 413, "body_too_large"),
        (client.post(path, headers=alice, json=BODY_ROUTES[route]), 422, "validation_failed"),
    ]
    for resp, status, code in answers:
        problem(resp, status, code)
        assert code in listed(spec, route, status), (route, status, code)
    # 400 is the JSON parser's alone: no route lists malformed JSON under 422.
    assert "malformed_json" not in listed(spec, route, 422)
    assert client.get("/v1/policies/active", headers=alice).json()["version"] == shipped


def test_a_bundle_above_its_limit_is_refused_as_such(api: tuple[TestClient, Services]) -> None:
    """The bundle limit is reachable: a bundle one byte over it travels in a body the
    gateway accepts, and is refused by name, not as a body too large."""
    client, services = api
    alice = bearer(services, "officer", "alice")
    files = shipped_sources()
    used = sum(len(t.encode()) for t in files.values())
    pad = "package accord.pad\n"
    files["pad.rego"] = pad + "#" * (MAX_BUNDLE_BYTES - used - len(pad) + 1)
    body = json.dumps({"files": files}).encode()
    assert len(body) <= services.settings.max_body_bytes
    resp = post_raw(client, "/v1/policies", alice, body)
    doc = problem(resp, 422, "validation_failed")
    assert f"the limit is {MAX_BUNDLE_BYTES}" in doc["detail"]
    assert len(client.get("/v1/policies", headers=alice).json()) == 1  # nothing stored


def test_the_bundle_limit_fits_the_default_body_limit(api: tuple[TestClient, Services]) -> None:
    """A bundle at the limit, of Rego that JSON escapes as much as the shipped one
    does, fits in a body under the default limit with room to spare."""
    _, services = api
    sources = shipped_sources()
    raw = sum(len(t.encode()) for t in sources.values())
    encoded = len(json.dumps({"files": sources, "note": "x" * 1000}).encode())
    assert MAX_BUNDLE_BYTES * encoded / raw < services.settings.max_body_bytes
    assert services.settings.max_body_bytes == 1_048_576  # the documented default
