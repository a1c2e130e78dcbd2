"""The citizen's access log: who accessed my data, when, why; embargoes hide and are audited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit import AuditLog, engine_for
from examples.launch import Departments
from gateway.demo import agreement_doc
from gateway.services import Services
from tests._support.gateway import Gateway, add_agreement, running_gateway
from tests.exchange.conftest import subject_with

PERSON = {"dataset": "person", "purpose": "benefit-eligibility"}


def _embargoed(services: Services) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    doc = agreement_doc(
        "welfare-investigation",
        "Fraud investigation (embargoed)",
        "civil-registry",
        "welfare-office",
        ("benefit-eligibility", "Social Welfare Act s.88 (fraud investigation)"),
        "confidential",
        [],
        [{"id": "person", "model": "person@1", "fields": {"given_name": {"operation": "pass"}}}],
        (
            (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
            (now + timedelta(days=60)).isoformat().replace("+00:00", "Z"),
        ),
    )
    doc["embargo_until"] = (now + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    add_agreement(services, doc)


@pytest.fixture(scope="module")
def gw(departments: Departments, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-subjects")
    with running_gateway(
        db_url=f"sqlite:///{data / 'accord.db'}",
        data_dir=data,
        departments_env=departments.env,
        prepare=_embargoed,
    ) as g:
        yield g


def _entries(gw: Gateway) -> list[dict[str, Any]]:
    engine = engine_for(gw.env["ACCORD_DATABASE_URL"])
    log = AuditLog(engine)
    try:
        return [e.doc() for e in log.entries(0, log.head().size)]
    finally:
        log.close()
        engine.dispose()


def test_accesses_are_listed_newest_first_and_paginated(gw: Gateway) -> None:
    subject = subject_with("civil")
    welfare = gw.client("welfare-office")
    ids = [
        welfare.exchange(
            agreement="welfare-person-lookup",
            **PERSON,
            query={"kind": "record", "subject": subject},
        ).exchange_id
        for _ in range(3)
    ]
    portal = gw.client("citizen-portal")
    first = portal.accesses(subject, limit=2)
    second = portal.accesses(subject, limit=2, offset=2)
    listed = [a["exchange_id"] for a in first["accesses"] + second["accesses"]]
    assert listed[:3] == list(reversed(ids))
    assert first["accesses"][0]["fields"] and "person_id" in first["accesses"][0]["operations"]
    other = portal.accesses(subject_with("claims"))
    assert all(a["exchange_id"] not in ids for a in other["accesses"])


def test_embargoed_agreement_is_hidden_and_the_hiding_is_audited(gw: Gateway) -> None:
    subject = subject_with("civil")
    hidden = gw.client("welfare-office").exchange(
        agreement="welfare-investigation", **PERSON, query={"kind": "record", "subject": subject}
    )
    log = gw.client("citizen-portal").accesses(subject, limit=200)
    assert hidden.exchange_id not in [a["exchange_id"] for a in log["accesses"]]
    entries = _entries(gw)
    declared = [e for e in entries if e["event"] == "embargo" and e["outcome"] == "declared"]
    assert [e["agreement"] for e in declared] == ["welfare-investigation@1"]
    hid = [e for e in entries if e["event"] == "embargo" and e["outcome"] == "hidden"]
    assert hid and hid[-1]["agreement"] == "welfare-investigation@1"
    # The read itself is recorded, after what it hid, under the same pseudonym.
    assert entries[entries.index(hid[-1]) + 1] == {
        **entries[entries.index(hid[-1]) + 1],
        "event": "access_log",
        "outcome": "read",
        "actor": "citizen-portal/portal",
        "subject": hid[-1]["subject"],
        "detail": {"limit": 200, "offset": 0, "count": log["count"]},
    }
    assert subject not in str(entries)  # the log only ever holds the pseudonym
