"""A refused agreement change is answered even when its audit entry cannot be appended.

The refusal changes nothing, so it must not turn into a 500 or a hung request
because the audit store refused the write: the caller gets the refusal, and the
gateway's own log says which refusal went unrecorded.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from tests.gateway.conftest import Parties
from tests.gateway.test_agreement_submission_audit import JSON_TYPE, _admin, env
from tests.gateway.test_api_admin import assert_problem

__all__ = ["env"]  # the fixture, shared with the submission tests

STATUS = "/v1/agreements/person-lookup/versions/1/status"
#: The store refuses every new audit entry, as a full or failing disk would.
REFUSE_SQLITE = (
    "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
)
REFUSE_PG = (
    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
    " $$BEGIN RAISE EXCEPTION 'disk says no'; END$$;"
    " CREATE TRIGGER refuse BEFORE INSERT ON audit_entries"
    " FOR EACH ROW EXECUTE FUNCTION refuse();"
)


def _refuse_audit_inserts(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(REFUSE_SQLITE if engine.dialect.name == "sqlite" else REFUSE_PG)


def _unrecorded(logs: list[MutableMapping[str, Any]], code: str) -> list[MutableMapping[str, Any]]:
    """The log events saying the refusal ``code`` went unrecorded."""
    return [
        e
        for e in logs
        if (e["event"] == "agreement_refusal_unaudited" and e.get("code") == code)
        or (e["event"] == "audit_append_failed" and e.get("refused") == code)
    ]


def test_refusal_before_the_route_is_answered_when_its_entry_is_not_appended(
    env: tuple[TestClient, Parties],
) -> None:
    client, parties = env
    services = parties.services
    parties.services.agreements.submit(parties.sign(parties.terms()), actor="test")
    size = services.audit_log.head().size
    _refuse_audit_inserts(services.engine)
    headers = {**_admin(services), **JSON_TYPE}
    with capture_logs() as logs:
        assert_problem(client.post(STATUS, content=b'{"', headers=headers), 400, "malformed_json")
        assert_problem(
            client.post("/v1/agreements", content=b"[]", headers=headers), 422, "validation_failed"
        )
    assert _unrecorded(logs, "malformed_json")
    assert _unrecorded(logs, "validation_failed")
    assert services.audit_log.head().size == size


def test_refusal_by_the_service_is_answered_when_its_entry_is_not_appended(
    env: tuple[TestClient, Parties],
) -> None:
    client, parties = env
    services = parties.services
    parties.services.agreements.submit(parties.sign(parties.terms()), actor="test")
    size = services.audit_log.head().size
    _refuse_audit_inserts(services.engine)
    headers = {**_admin(services), **JSON_TYPE}
    with capture_logs() as logs:
        r = client.post(STATUS, json={"status": "active", "reason": "r"}, headers=headers)
    assert_problem(r, 409, "bad_transition")
    [event] = [e for e in logs if e["event"] == "agreement_refusal_unaudited"]
    assert event["code"] == "bad_transition"
    assert services.audit_log.head().size == size
