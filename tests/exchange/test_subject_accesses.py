"""The citizen's access log: who accessed my data, when, why; embargoes hide and are audited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples.launch import Departments
from examples.synth import people
from gateway.demo import agreement_doc
from gateway.exchange.subjects import SubjectPseudonyms, subject_accesses
from gateway.services import Services, build_services
from tests._support.gateway import Gateway, add_agreement, audit_docs, sqlite_gateway
from tests.exchange.conftest import subject_with


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
    with sqlite_gateway(data, departments.env, prepare=_embargoed) as g:
        yield g


def _entries(gw: Gateway) -> list[dict[str, Any]]:
    return audit_docs(gw.env["ACCORD_DATABASE_URL"])


def _lookup(gw: Gateway, subject: str, agreement: str = "welfare-person-lookup") -> str:
    query = {"kind": "record", "subject": subject}
    welfare = gw.client("welfare-office")
    answer = welfare.exchange(
        agreement=agreement,
        dataset="person",
        purpose="benefit-eligibility",
        query=query,
        fields=["given_name"],
    )
    return answer.exchange_id


def test_accesses_are_listed_newest_first_and_paginated(gw: Gateway) -> None:
    """By ``offset`` too: deprecated, and still answered."""
    subject = subject_with("civil")
    ids = [_lookup(gw, subject) for _ in range(3)]
    portal = gw.client("citizen-portal")
    first = portal.accesses(subject, limit=2)
    second = portal.accesses(subject, limit=2, offset=2)
    listed = [a["exchange_id"] for a in first["accesses"] + second["accesses"]]
    assert listed[:3] == list(reversed(ids))
    assert first["accesses"][0]["fields"] == ["given_name"]
    assert "given_name" in first["accesses"][0]["operations"]
    other = portal.accesses(subject_with("claims"))
    assert all(a["exchange_id"] not in ids for a in other["accesses"])


def test_embargoed_agreement_is_hidden_and_the_hiding_is_audited(gw: Gateway) -> None:
    subject = subject_with("civil")
    hidden = _lookup(gw, subject, "welfare-investigation")
    log = gw.client("citizen-portal").accesses(subject, limit=200)
    assert hidden not in [a["exchange_id"] for a in log["accesses"]]
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


def test_pages_walked_by_next_never_repeat_an_access_while_new_ones_arrive(
    gateway: Gateway,
) -> None:
    """Page 2 by offset repeated page 1's last accesses once 3 more had arrived."""
    subject = people()[3].person_id  # a person of their own
    older = [_lookup(gateway, subject) for _ in range(7)]
    portal = gateway.client("citizen-portal")
    first = portal.accesses(subject, limit=5)
    assert first["before"] is None and first["count"] == 5
    newer = [_lookup(gateway, subject) for _ in range(3)]
    walked = [a["exchange_id"] for a in first["accesses"]]
    page = first
    while page["next"] is not None:
        assert page["next"] == page["accesses"][-1]["seq"]
        page = portal.accesses(subject, limit=5, before=page["next"])
        assert all(a["seq"] < page["before"] for a in page["accesses"])
        walked += [a["exchange_id"] for a in page["accesses"]]
    assert walked == list(reversed(older))  # each once, none skipped, newest first
    assert page["count"] == 2  # the last page is short and says so: no empty page
    # a walk started now sees the new ones first, and the client follows the cursor
    assert [a["exchange_id"] for a in portal.all_accesses(subject, page_size=4)] == list(
        reversed(older + newer)
    )


def test_an_embargo_ending_between_pages_neither_repeats_nor_skips(gw: Gateway) -> None:
    """An access whose embargo ends during a walk shows on the page its seq falls in
    if the walk has not passed it, and never on two pages."""
    subject = people()[4].person_id
    v1 = _lookup(gw, subject)
    h1 = _lookup(gw, subject, "welfare-investigation")
    v2 = _lookup(gw, subject)
    h2 = _lookup(gw, subject, "welfare-investigation")
    v3 = _lookup(gw, subject)
    services = build_services(gw.settings(), migrate=False)
    try:
        secret = services.settings.pseudonym_secret.get_secret_value().encode()

        def page(now: datetime, before: int | None) -> dict[str, Any]:
            return subject_accesses(
                audit_log=services.audit_log,
                agreements=services.agreements,
                pseudonyms=SubjectPseudonyms(secret),
                subject_key=subject,
                now=now,
                limit=2,
                actor="citizen-portal/portal",
                before=before,
            )

        now = datetime.now(UTC)
        first = page(now, None)  # under embargo: h2 hidden
        after = now + timedelta(days=31)  # the embargo has ended
        second = page(after, first["next"])
        fresh = page(after, None)
    finally:
        services.close()
        services.engine.dispose()
    ids = [[a["exchange_id"] for a in p["accesses"]] for p in (first, second, fresh)]
    assert ids[0] == [v3, v2]
    assert ids[1] == [h1, v1] and second["next"] is None  # h1 on its own page; h2 was passed
    assert ids[2] == [v3, h2]  # a walk started after the embargo shows h2 in its place
    hidden = [e for e in _entries(gw) if e["event"] == "embargo" and e["outcome"] == "hidden"]
    assert hidden[-1]["agreement"] == "welfare-investigation@1"  # the first page's hiding
