"""Providers that answer wrongly, over HTTP: a gateway bound to a fake REST provider
on 127.0.0.1 that answers a lookup with another person's record, sends a lone
surrogate, pages forever or repeats its cursor; plus the lookups refused after (or
now before) the fetch, and a rule for a field nobody asked for.

Every refusal is problem+json with its code, audited under the exchange's id,
releases nothing, and the log verifies afterwards. Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
import yaml

from examples.launch import EXAMPLES, Departments
from gateway.demo import agreement_doc
from gateway.exchange.models import DatasetBindingCreate
from gateway.services import Services
from tests._support.gateway import (
    Gateway,
    add_agreement,
    exchange_entry,
)
from tests.exchange.attack_support import (
    PATH,
    expect_problem,
    good_token,
)
from tests.exchange.conftest import STORES, gateway_on_store

SUBJECT = "10000000001"
OTHER = "99999999999"
ABSENT = "00000000009"  # the fake holds no key starting 000
AGREEMENT = "hostile-lookup"
QUOTA_AGREEMENT = "hostile-quota"
PURPOSE = "benefit-eligibility"


def _citizen(key: str) -> dict[str, Any]:
    return {
        "ssn": key,
        "name": {"first": "Ada", "last": "Byron"},
        "dob": "10/12/1990",
        "gender": "F",
        "civil_status": "S",
        "residence": {"street": "Main St 1", "city": "Springfield", "zip": "1012ab"},
        "household_ref": "HH123456",
        "hh_number": "123456",
    }


class FakeRegistry(BaseHTTPRequestHandler):
    """A civil registry that misbehaves by path; counts the calls it gets."""

    hits: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        route, _, key = path.strip("/").partition("/")
        with self.lock:
            self.hits[route] = self.hits.get(route, 0) + 1
        if route == "ok" and key.startswith("000"):
            return self._send(404, b'{"error": "no such citizen"}')
        if route == "ok":
            return self._send(200, json.dumps(_citizen(key)).encode())
        if route == "wrong":
            return self._send(200, json.dumps(_citizen(OTHER)).encode())
        if route == "surrogate":
            # valid JSON: the escape of a lone surrogate, in a name
            body = json.dumps(_citizen(key)).replace('"Ada"', '"A\\ud800da"')
            body = body.replace('"Byron"', '"B\\ud800yron"')
            return self._send(200, body.encode())
        if route == "endless":
            time.sleep(0.1)
            page = {"items": [], "next": f"c{self.hits[route]}"}
            return self._send(200, json.dumps(page).encode())
        if route == "repeat":
            return self._send(200, b'{"items": [], "next": "same"}')
        return self._send(404, b"{}")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


PERSON_FIELDS = {
    "person_id": {"operation": "pass"},
    "given_name": {"operation": "pass"},
    "family_name": {"operation": "pseudonymise"},
    "household_id": {"operation": "pass"},
    "birth_date": {"operation": "verify_only", "predicates": ["age_over(18)"]},
}
#: dataset -> (fake route for lookups, list route for aggregates, mapping variant)
DATASETS = {
    "hp-ok": ("ok", None, "loose"),
    "hp-plain": ("ok", None, "plain"),
    "hp-wrong": ("wrong", None, "plain"),
    "hp-wrong-loose": ("wrong", None, "loose"),
    "hp-surrogate": ("surrogate", None, "plain"),
    "hp-endless": ("ok", "endless", "plain"),
    "hp-repeat": ("ok", "repeat", "plain"),
}


def _mapping(variant: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(
        (EXAMPLES / "civil_registry" / "citizen.mapping.yaml").read_text()
    )
    if variant == "loose":
        # the subject field not required (so only the subject check fetches it), and a
        # rule with a constant part that is wrong unless its source was fetched
        spec["fields"]["person_id"] = {"from": "ssn"}
        spec["fields"]["household_id"] = {
            "concat": {"parts": [{"const": "HH"}, {"from": "hh_number"}]}
        }
    return spec


def _prepare(fake_url: str) -> Any:
    def prepare(services: Services) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        window = (
            (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
            (now + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
        )
        basis = (PURPOSE, "Social Welfare Act s.12")
        datasets = [
            {"id": ds, "model": "person@1", "fields": PERSON_FIELDS}
            for ds in DATASETS
            if ds not in ("hp-endless", "hp-repeat")
        ] + [
            {
                "id": ds,
                "model": "person@1",
                "fields": {"sex": {"operation": "aggregate"}},
                "aggregate": {"min_k": 2},
            }
            for ds in ("hp-endless", "hp-repeat")
        ]
        doc = agreement_doc(
            AGREEMENT, "t", "civil-registry", "welfare-office", basis, "confidential", [],
            datasets, window,
        )  # fmt: skip
        add_agreement(services, doc)
        quota = {
            **doc,
            "id": QUOTA_AGREEMENT,
            "datasets": [d for d in datasets if d["id"] == "hp-ok"],
            "quotas": {"per_minute": 6000, "per_day": 3},
        }
        add_agreement(services, quota)
        for ds, (route, list_route, variant) in DATASETS.items():
            entity: dict[str, Any] = {
                "key": "ssn",
                "key_pattern": "[0-9]{11}",
                "path": f"/{route}/{{key}}",
                "fields_param": "fields",
                # everything the mapping reads (checked when the binding is written);
                # the fake answers without registered_at, which no test asks for
                "fields": [*_citizen(SUBJECT), "registered_at"],
            }
            if list_route:
                entity["list_path"] = f"/{list_route}"
            services.bindings.put_binding(
                "civil-registry",
                DatasetBindingCreate(
                    dataset_id=ds,
                    model="person@1",
                    entity="citizen",
                    subject_field="person_id",
                    connector={
                        "kind": "rest",
                        "name": "fake_registry",
                        "base_url": fake_url,
                        "retries": {"attempts": 1},
                        "timeouts": {"connect": 1.0, "read": 1.0, "total": 6.0},
                        "entities": {"citizen": entity},
                    },
                    mapping=_mapping(variant),
                ),
                actor="test",
            )

    return prepare


@pytest.fixture(scope="module", params=STORES)
def gw(
    request: pytest.FixtureRequest,
    departments: Departments,
    tmp_path_factory: pytest.TempPathFactory,
    fake: str,
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp(f"gw-hostile-{request.param}")
    with gateway_on_store(
        request,
        departments,
        data,
        prepare=_prepare(fake),
        # a fetch budget well below the connector's own 6 s total: the whole paged
        # read must stop at it
        extra_env={"ACCORD_FETCH_TIMEOUT_S": "2"},
    ) as g:
        yield g


@pytest.fixture(autouse=True)
def log_verifies(gw: Gateway) -> Iterator[None]:
    """After each test, the audit log verifies."""
    yield
    out = gw.audit_cli("verify")
    assert out.returncode == 0, out.stdout + out.stderr


def _body(dataset: str, query: dict[str, Any], **extra: Any) -> bytes:
    doc = {
        "agreement": AGREEMENT,
        "dataset": dataset,
        "purpose": PURPOSE,
        "query": query,
        **extra,
    }
    return json.dumps(doc).encode()


def _lookup(dataset: str, subject: str = SUBJECT, **extra: Any) -> bytes:
    return _body(dataset, {"kind": "record", "subject": subject}, **extra)


def _post(gw: Gateway, body: bytes, client: httpx.Client | None = None) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {good_token(gw, body)}",
    }
    if client is not None:
        return client.post(PATH, content=body, headers=headers)
    return httpx.post(gw.url + PATH, content=body, headers=headers, timeout=30)


def _entry(gw: Gateway, exchange_id: str) -> dict[str, Any]:
    """The audit entry of ``exchange_id`` (exactly one)."""
    return exchange_entry(gw.env["ACCORD_DATABASE_URL"], exchange_id)


def _failed(gw: Gateway, r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    doc = expect_problem(r, status, code)
    entry = _entry(gw, doc["exchange_id"])
    assert (entry["event"], entry["outcome"], entry["problem"]) == ("exchange", "failed", code)
    return entry


def _hits(route: str) -> int:
    with FakeRegistry.lock:
        return FakeRegistry.hits.get(route, 0)


# -- another person's record --------------------------------------------------------


def test_record_of_another_subject_is_not_released(gw: Gateway) -> None:
    r = _post(gw, _lookup("hp-wrong", fields=["person_id", "given_name"]))
    _failed(gw, r, 502, "connector_bad_response")
    assert OTHER not in r.text and "Ada" not in r.text


def test_record_of_another_subject_is_caught_when_the_subject_field_is_not_requested(
    gw: Gateway,
) -> None:
    """The subject field is fetched for the check though the caller did not ask for it."""
    r = _post(gw, _lookup("hp-wrong-loose", fields=["given_name"]))
    _failed(gw, r, 502, "connector_bad_response")
    assert "Ada" not in r.text


def test_verify_about_another_subject_is_not_answered(gw: Gateway) -> None:
    body = _body("hp-wrong", {"kind": "verify", "subject": SUBJECT, "predicate": "age_over(18)"})
    r = _post(gw, body)
    _failed(gw, r, 502, "connector_bad_response")


def test_subject_field_fetched_for_the_check_is_not_released(gw: Gateway) -> None:
    r = _post(gw, _lookup("hp-ok", fields=["given_name"]))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["records"] == [{"given_name": "Ada"}]
    assert r.json()["released"] == {"given_name": "pass"}


# -- a rule for a field nobody asked for --------------------------------------------


def test_unrequested_constant_rule_does_not_fail_the_exchange(gw: Gateway) -> None:
    """``household_id: concat [const HH, from household_ref]`` is wrong without its
    source; asking only for ``given_name`` must not run (or validate) it."""
    r = _post(gw, _lookup("hp-ok", fields=["given_name"]))
    assert r.status_code == 200, r.text
    both = _post(gw, _lookup("hp-ok", fields=["given_name", "household_id"]))
    assert both.status_code == 200, both.text
    assert both.json()["result"]["records"] == [{"given_name": "Ada", "household_id": "HH123456"}]


# -- text that is not Unicode -------------------------------------------------------


@pytest.mark.parametrize("field", ["given_name", "family_name"])
def test_lone_surrogate_from_provider_is_a_bad_response(gw: Gateway, field: str) -> None:
    """Passed or pseudonymised: 502, audited, and the connection stays usable."""
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        r = _post(gw, _lookup("hp-surrogate", fields=[field]), client)
        _failed(gw, r, 502, "connector_bad_response")
        again = _post(gw, _lookup("hp-ok", fields=["given_name"]), client)
        assert again.status_code == 200, again.text


# -- paged reads --------------------------------------------------------------------


def _aggregate(dataset: str) -> bytes:
    return _body(dataset, {"kind": "aggregate", "group_by": ["sex"], "measures": ["count"]})


def test_endless_pages_stop_at_the_fetch_budget(gw: Gateway) -> None:
    before = _hits("endless")
    r = _post(gw, _aggregate("hp-endless"))
    _failed(gw, r, 504, "connector_timeout")
    # 0.1 s a page within a 2 s budget: about 20 pages, never the connector's 6 s each
    assert _hits("endless") - before < 40


def test_repeated_cursor_is_a_bad_response(gw: Gateway) -> None:
    before = _hits("repeat")
    r = _post(gw, _aggregate("hp-repeat"))
    _failed(gw, r, 502, "connector_bad_response")
    assert _hits("repeat") - before == 2


# -- what reaches the provider, and what counts -------------------------------------


def test_predicate_not_allowed_never_reaches_the_provider(gw: Gateway) -> None:
    before = _hits("ok")
    body = _body("hp-plain", {"kind": "verify", "subject": SUBJECT, "predicate": "age_over(21)"})
    _failed(gw, _post(gw, body), 422, "predicate_not_allowed")
    assert _hits("ok") == before
    allowed = _body("hp-plain", {"kind": "verify", "subject": SUBJECT, "predicate": "age_over(18)"})
    r = _post(gw, allowed)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["result"] is True
    assert _hits("ok") == before + 1


def test_membership_probes_count_against_the_quota(gw: Gateway) -> None:
    """Three lookups a day: three keys that are not on record use them up."""
    for n in range(3):
        body = _lookup(
            "hp-ok", subject=f"{ABSENT[:-1]}{n}", agreement=QUOTA_AGREEMENT, fields=["given_name"]
        )
        doc = expect_problem(_post(gw, body), 404, "subject_not_found")
        assert _entry(gw, doc["exchange_id"])["problem"] == "subject_not_found"
    r = _post(gw, _lookup("hp-ok", agreement=QUOTA_AGREEMENT, fields=["given_name"]))
    doc = expect_problem(r, 403, "policy_denied")
    assert [reason["code"] for reason in doc["reasons"]] == ["quota_exceeded"]
