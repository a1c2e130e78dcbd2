"""Per-field release rules hold in aggregates and record queries, over HTTP, on both stacks.

An aggregate groups only by fields the agreement releases as ``aggregate``,
``pass`` or ``generalise`` (by the generalised value) and sums only ``aggregate``
and ``pass`` ones; anything else is refused by the policy (403 ``policy_denied``,
reason ``aggregate_not_allowed``) before the provider is asked. A record query for
a ``verify_only`` field is refused (``verify_only``), and an expired agreement's
refusal states ``agreement_inactive`` once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples.launch import Departments
from gateway.client import AccordClientError, Denied
from gateway.demo import agreement_doc
from gateway.services import Services
from tests._support.gateway import Gateway, add_agreement, audit_docs, sqlite_gateway
from tests.exchange.conftest import production_stack, subject_with

ELIGIBILITY = ("benefit-eligibility", "Social Welfare Act s.12 (eligibility assessment)")
INCOME = ("income-assessment", "Income Tax Act s.40 (taxable benefits)")


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _agreements(services: Services) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    window = (_iso(now - timedelta(days=1)), _iso(now + timedelta(days=60)))

    def person(agreement_id: str, fields: dict[str, Any], win: tuple[str, str]) -> None:
        add_agreement(
            services,
            agreement_doc(
                agreement_id,
                agreement_id,
                "civil-registry",
                "welfare-office",
                ELIGIBILITY,
                "confidential",
                [],
                [
                    {
                        "id": "person",
                        "model": "person@1",
                        "fields": fields,
                        "aggregate": {"min_k": 2},
                    }
                ],
                win,
            ),
        )

    person(
        "welfare-agg-rules",
        {
            "family_name": {"operation": "mask", "keep_prefix": 1},
            "birth_date": {"operation": "verify_only", "predicates": ["age_over(18)"]},
            "address_postcode": {"operation": "generalise", "to": "district"},
            "person_id": {"operation": "pseudonymise"},
            "address_city": {"operation": "aggregate"},
            "marital_status": {"operation": "pass"},
        },
        window,
    )
    person(
        "welfare-agg-years",
        {"birth_date": {"operation": "generalise", "to": "year"}},
        window,
    )
    # Submitted while it is in force (a version already expired is refused); it
    # expires two seconds later, before any test runs.
    person(
        "welfare-expired",
        {"given_name": {"operation": "pass"}},
        (_iso(now - timedelta(days=60)), _iso(now + timedelta(seconds=2))),
    )
    time.sleep(max(0.0, (now + timedelta(seconds=2.1) - datetime.now(UTC)).total_seconds()))
    add_agreement(
        services,
        agreement_doc(
            "tax-claims-agg",
            "tax-claims-agg",
            "welfare-office",
            "tax-authority",
            INCOME,
            "confidential",
            [],
            [
                {
                    "id": "benefit-claim",
                    "model": "benefit_claim@1",
                    "fields": {
                        "status": {"operation": "pass"},
                        "monthly_amount": {"operation": "verify_only"},
                        "filed_on": {"operation": "generalise", "to": "month"},
                    },
                    "aggregate": {"min_k": 2},
                }
            ],
            window,
        ),
    )


@pytest.fixture(scope="module")
def embedded_rules(
    departments: Departments, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-rules-embedded")
    with sqlite_gateway(data, departments.env, prepare=_agreements) as gw:
        yield gw


@pytest.fixture(scope="module")
def production_rules(
    departments: Departments, tmp_path_factory: pytest.TempPathFactory, pg_server_url: str
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-rules-production")
    with production_stack(departments, data, pg_server_url, prepare=_agreements) as gw:
        yield gw


@pytest.fixture(params=["embedded", "production"])
def gw(request: pytest.FixtureRequest) -> Gateway:
    gateway: Gateway = request.getfixturevalue(f"{request.param}_rules")
    return gateway


def _aggregate(gw: Gateway, agreement: str, query: dict[str, Any]) -> Any:
    if agreement == "tax-claims-agg":
        client, dataset, purpose = gw.client("tax-authority"), "benefit-claim", INCOME[0]
    else:
        client, dataset, purpose = gw.client("welfare-office"), "person", ELIGIBILITY[0]
    return client.exchange(
        agreement=agreement,
        dataset=dataset,
        purpose=purpose,
        query={"kind": "aggregate", **query},
    )


def _audit_entry(gw: Gateway, exchange_id: str) -> dict[str, Any]:
    docs = audit_docs(gw.env["ACCORD_DATABASE_URL"])
    return next(d for d in docs if d.get("exchange_id") == exchange_id)


@pytest.mark.parametrize(
    ("group_by", "operation"),
    [
        ("family_name", "mask"),
        ("birth_date", "verify_only"),
        ("person_id", "pseudonymise"),  # counts per pseudonym are counts per person
    ],
)
def test_grouping_by_a_field_released_otherwise_is_refused(
    gw: Gateway, group_by: str, operation: str
) -> None:
    with pytest.raises(Denied) as err:
        _aggregate(gw, "welfare-agg-rules", {"group_by": [group_by]})
    assert err.value.status == 403
    assert err.value.reasons == ["aggregate_not_allowed"]
    [reason] = err.value.problem["reasons"]
    # "cannot be grouped by" once the gateway passes the policy the aggregate's spec
    # (request_step.aggregate_spec); "cannot be aggregated" while it judges every
    # field an aggregate names as a group-by.
    assert reason["message"] in {
        f"field {group_by} cannot be {verb}: the agreement releases it as {operation}"
        for verb in ("grouped by", "aggregated")
    }


def test_grouping_by_a_generalised_field_groups_by_the_generalised_value(gw: Gateway) -> None:
    answer = _aggregate(gw, "welfare-agg-years", {"group_by": ["birth_date"]})
    cells = answer.result["cells"]
    assert cells, "the demo population has birth years of at least two people"
    assert all(len(c["birth_date"]) == 4 and c["birth_date"].isdigit() for c in cells)
    assert answer.body["released"] == {"birth_date": "generalise"}
    assert answer.result["min_k"] == 2
    entry = _audit_entry(gw, answer.exchange_id)
    assert entry["operations"] == {"birth_date": "generalise"}


def test_an_aggregate_records_the_operation_each_field_left_under(gw: Gateway) -> None:
    answer = _aggregate(
        gw,
        "welfare-agg-rules",
        {"group_by": ["address_postcode", "address_city", "marital_status"]},
    )
    assert answer.body["released"] == {
        "address_postcode": "generalise",
        "address_city": "aggregate",
        "marital_status": "aggregate",
    }
    assert all(" " not in c["address_postcode"] for c in answer.result["cells"])  # districts


def test_summing_a_verify_only_amount_is_refused(gw: Gateway) -> None:
    with pytest.raises(Denied) as err:
        _aggregate(
            gw,
            "tax-claims-agg",
            {"group_by": ["status"], "measures": ["count", "sum(monthly_amount)"]},
        )
    assert err.value.status == 403
    assert err.value.reasons == ["aggregate_not_allowed"]
    assert "monthly_amount" in err.value.problem["reasons"][0]["message"]


def test_summing_a_generalised_field_is_refused(gw: Gateway) -> None:
    with pytest.raises(AccordClientError) as err:
        _aggregate(gw, "tax-claims-agg", {"group_by": ["status"], "measures": ["sum(filed_on)"]})
    # 403 from the policy once the gateway passes it the aggregate's spec
    # (request_step.aggregate_spec); until then the release step refuses it (422).
    assert (err.value.status, err.value.reasons or [err.value.code]) in (
        (403, ["aggregate_not_allowed"]),
        (422, ["aggregate_not_allowed"]),
    )


def test_a_record_query_for_a_verify_only_field_is_refused(gw: Gateway) -> None:
    client = gw.client("welfare-office")
    answers = []
    for subject in (subject_with("civil"), "00000000000"):
        with pytest.raises(Denied) as err:
            client.exchange(
                agreement="welfare-person-lookup",
                dataset="person",
                purpose=ELIGIBILITY[0],
                fields=["birth_date"],
                query={"kind": "record", "subject": subject},
            )
        answers.append((err.value.status, err.value.problem["reasons"]))
    assert answers[0] == answers[1]
    assert answers[0] == (
        403,
        [
            {
                "code": "verify_only",
                "message": "field birth_date can only be asked about with a verify query",
            }
        ],
    )


def test_a_record_query_naming_no_field_leaves_verify_only_fields_out(gw: Gateway) -> None:
    answer = gw.client("welfare-office").exchange(
        agreement="welfare-person-lookup",
        dataset="person",
        purpose=ELIGIBILITY[0],
        query={"kind": "record", "subject": subject_with("civil")},
    )
    assert "birth_date" not in answer.body["released"]
    assert answer.records[0] and "birth_date" not in answer.records[0]


def test_an_expired_agreement_is_refused_with_one_reason(gw: Gateway) -> None:
    with pytest.raises(Denied) as err:
        gw.client("welfare-office").exchange(
            agreement="welfare-expired",
            dataset="person",
            purpose=ELIGIBILITY[0],
            query={"kind": "record", "subject": subject_with("civil")},
        )
    reasons = err.value.problem["reasons"]
    assert [r["code"] for r in reasons] == ["agreement_inactive"], reasons
