"""The signed agreement bounds every release, whatever the active policy says.

A security review had an officer propose an allow-all policy; it passed the
checks, a second officer approved it, and once active the exchange released a
field the agreement does not list, the raw subject id where the agreement says
``pseudonymise``, a ``verify_only`` birth date as a value, and data for a purpose
the agreement does not list. The policy may only restrict what the agreement
allows: here the same kind of policy goes through the real workflow (proposed,
checked, approved by a second officer, activated) and every exchange beyond the
agreement is refused, 500 ``obligation_exceeds_agreement`` or
``decision_exceeds_agreement``, audited as a failed exchange, nothing released.
Restrictions the policy adds (a mask on a ``pass`` field) still hold.

Runs on the embedded engine with SQLite and on a real OPA server with PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples.launch import Departments
from gateway.client import AccordClientError
from gateway.demo import agreement_doc
from gateway.policy.bundle import PolicyBundle
from gateway.services import Services
from tests._support.gateway import Gateway, add_agreement, audit_docs, sqlite_gateway
from tests.exchange.conftest import production_stack, subject_with

pytestmark = pytest.mark.opa

AGREEMENT, DATASET, PURPOSE = "welfare-person-lookup", "person", "benefit-eligibility"
STATISTICS = "person-statistics"  # the same agreement's aggregate dataset, min_k 5
#: An agreement whose aggregates may group by city only, and only count.
LISTED = "welfare-city-counts"
#: Agreements not in force: one suspended, one whose window opens in a week.
SUSPENDED, NOT_YET = "welfare-suspended-lookup", "welfare-future-lookup"
#: Its ceiling is `internal`: the city (internal) may leave, sex (confidential) not.
LOW_CEILING = "welfare-internal-lookup"

#: Allows everything and releases each requested field as it is, except that it
#: masks family names (a restriction, which must hold) and, for an aggregate
#: grouped by sex, asks for a k of 2 (below the agreement's 5).
ALLOW_ALL = """package accord.exchange

decision := {"allow": true, "deny": [], "obligations": obligations, "level": "confidential"}

kind := input.request.query.kind

obligations[name] := {"operation": "pass"} if {
	kind != "aggregate"
	some name, _ in input.request.fields
	name != "family_name"
}

obligations["family_name"] := {"operation": "mask", "keep_prefix": 1} if {
	kind != "aggregate"
	input.request.fields.family_name
}

obligations[name] := {"operation": "aggregate"} if {
	kind == "aggregate"
	not "sex" in input.request.query.group_by
	some name, _ in input.request.fields
}

obligations[name] := {"operation": "aggregate", "min_k": 2} if {
	kind == "aggregate"
	"sex" in input.request.query.group_by
	some name, _ in input.request.fields
}
"""
ALLOW_ALL_TEST = """package accord.exchange_test

import data.accord.exchange

test_allows_anything if {
	exchange.decision.allow with input as {"request": {"fields": {"x": null}}}
}
"""


def _at(now: datetime, days: int) -> str:
    return (now + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def _activate_allow_all(services: Services) -> None:
    """Through the real four-eyes workflow: proposed and checked, approved, activated."""
    now = datetime.now(UTC).replace(microsecond=0)
    window = tuple((now + timedelta(days=d)).isoformat().replace("+00:00", "Z") for d in (-1, 60))
    add_agreement(
        services,
        agreement_doc(
            LISTED,
            LISTED,
            "civil-registry",
            "welfare-office",
            (PURPOSE, "Social Welfare Act s.12 (eligibility assessment)"),
            "confidential",
            [],
            [
                {
                    "id": DATASET,
                    "model": "person@1",
                    "fields": {"address_city": {"operation": "pass"}, "sex": {"operation": "pass"}},
                    "aggregate": {"min_k": 2, "group_by": ["address_city"], "measures": ["count"]},
                }
            ],
            (window[0], window[1]),
        ),
    )
    for agreement, (start, end) in ((SUSPENDED, (-1, 60)), (NOT_YET, (7, 60))):
        add_agreement(
            services,
            agreement_doc(
                agreement,
                agreement,
                "civil-registry",
                "welfare-office",
                (PURPOSE, "Social Welfare Act s.12 (eligibility assessment)"),
                "confidential",
                [],
                [{"id": DATASET, "model": "person@1", "fields": {"sex": {"operation": "pass"}}}],
                (_at(now, start), _at(now, end)),
            ),
        )
    add_agreement(
        services,
        agreement_doc(
            LOW_CEILING,
            LOW_CEILING,
            "civil-registry",
            "welfare-office",
            (PURPOSE, "Social Welfare Act s.12 (eligibility assessment)"),
            "internal",
            [],
            [
                {
                    "id": DATASET,
                    "model": "person@1",
                    "fields": {"sex": {"operation": "pass"}, "address_city": {"operation": "pass"}},
                }
            ],
            (_at(now, -1), _at(now, 60)),
        ),
    )
    services.agreements.transition(SUSPENDED, 1, "suspended", actor="test", reason="inquiry")
    services.policy.ensure_initial(services.settings.policy_dir)
    bundle = PolicyBundle.from_sources(
        {"exchange.rego": ALLOW_ALL, "exchange_test.rego": ALLOW_ALL_TEST}
    )
    proposed = services.policy.propose(bundle, actor="user:alice", note="allow all")
    assert proposed.status == "checked", proposed
    services.policy.approve(bundle.version, actor="user:bob")
    assert services.policy.activate(bundle.version, actor="user:bob").active


@pytest.fixture(scope="module")
def embedded_allow_all(
    departments: Departments, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-allow-all-embedded")
    with sqlite_gateway(data, departments.env, prepare=_activate_allow_all) as gw:
        yield gw


@pytest.fixture(scope="module")
def production_allow_all(
    departments: Departments, tmp_path_factory: pytest.TempPathFactory, pg_server_url: str
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-allow-all-production")
    with production_stack(departments, data, pg_server_url, prepare=_activate_allow_all) as gw:
        yield gw


@pytest.fixture(params=["embedded", "production"])
def gw(request: pytest.FixtureRequest) -> Gateway:
    gateway: Gateway = request.getfixturevalue(f"{request.param}_allow_all")
    return gateway


def _ask(
    gw: Gateway,
    *,
    fields: list[str] | None = None,
    query: dict[str, Any] | None = None,
    purpose: str = PURPOSE,
    dataset: str = DATASET,
    caller: str = "welfare-office",
    agreement: str = AGREEMENT,
) -> Any:
    return gw.client(caller).exchange(
        agreement=agreement,
        dataset=dataset,
        purpose=purpose,
        fields=fields,
        query=query or {"kind": "record", "subject": subject_with("civil")},
    )


def _refused(gw: Gateway, code: str, **ask: Any) -> dict[str, Any]:
    """The exchange is refused with ``code``, nothing in the answer, audited as failed."""
    with pytest.raises(AccordClientError) as err:
        _ask(gw, **ask)
    problem = err.value.problem
    assert (err.value.status, err.value.code) == (500, code), problem
    assert "result" not in problem and "released" not in problem
    exchange_id = err.value.exchange_id
    [entry] = [
        d for d in audit_docs(gw.env["ACCORD_DATABASE_URL"]) if d.get("exchange_id") == exchange_id
    ]
    assert (entry["event"], entry["outcome"], entry["status"]) == ("exchange", "failed", 500)
    assert entry["problem"] == code
    assert "fields" not in entry and "operations" not in entry and "response_sha256" not in entry
    assert entry["policy_version"]  # the auditor sees which policy version allowed it
    return problem


def test_the_allow_all_policy_is_active_and_releases_within_the_agreement(gw: Gateway) -> None:
    """Control: the policy is the one deciding, and what it allows within the
    agreement leaves, under the restriction it adds."""
    answer = _ask(gw, fields=["given_name", "family_name"])
    assert answer.body["released"] == {"given_name": "pass", "family_name": "mask"}
    [record] = answer.records
    assert record["given_name"] and "*" not in record["given_name"]
    assert record["family_name"][1:] == "*" * (len(record["family_name"]) - 1)


def test_field_the_agreement_does_not_list_is_not_released(gw: Gateway) -> None:
    problem = _refused(gw, "obligation_exceeds_agreement", fields=["given_name", "address_street"])
    assert "address_street" in problem["detail"]


def test_raw_subject_id_is_not_released_where_the_agreement_pseudonymises(gw: Gateway) -> None:
    problem = _refused(gw, "obligation_exceeds_agreement", fields=["person_id"])
    assert "person_id" in problem["detail"] and "pseudonymise" in problem["detail"]


def test_verify_only_birth_date_is_not_released_as_a_value(gw: Gateway) -> None:
    problem = _refused(gw, "obligation_exceeds_agreement", fields=["birth_date"])
    assert "birth_date" in problem["detail"] and "verify_only" in problem["detail"]


def test_verify_only_birth_date_answers_no_predicate_the_agreement_does_not_list(
    gw: Gateway,
) -> None:
    """``age_over(30)`` is not one of the agreement's predicates; under ``pass`` it
    would be answered, and a caller could binary-search the birth date."""
    subject = subject_with("civil")
    _refused(
        gw,
        "obligation_exceeds_agreement",
        fields=None,
        query={"kind": "verify", "subject": subject, "predicate": "age_over(30)"},
    )


def test_purpose_the_agreement_does_not_list_is_refused(gw: Gateway) -> None:
    problem = _refused(
        gw, "decision_exceeds_agreement", fields=["given_name"], purpose="debt-collection"
    )
    assert "debt-collection" in problem["detail"]


@pytest.mark.parametrize(
    ("agreement", "state"),
    [(SUSPENDED, "suspended"), (NOT_YET, "outside its validity window")],
)
def test_an_agreement_not_in_force_releases_nothing(
    gw: Gateway, agreement: str, state: str
) -> None:
    """A policy that ignores the agreement's status and window still releases nothing
    under a suspended agreement or one whose window has not opened."""
    problem = _refused(gw, "decision_exceeds_agreement", agreement=agreement, fields=["sex"])
    assert state in problem["detail"]


def test_a_field_above_the_agreements_ceiling_is_not_released(gw: Gateway) -> None:
    """The allow-all policy ignores classification; the gateway does not: a field
    classified above the agreement's ceiling releases nothing, one within it leaves."""
    problem = _refused(gw, "decision_exceeds_agreement", agreement=LOW_CEILING, fields=["sex"])
    assert "'sex', classified above the agreement's ceiling" in problem["detail"]
    answer = _ask(gw, agreement=LOW_CEILING, fields=["address_city"])
    [record] = answer.records
    assert set(record) == {"address_city"}


def test_another_department_cannot_use_the_agreement(gw: Gateway) -> None:
    _refused(gw, "decision_exceeds_agreement", fields=["given_name"], caller="tax-authority")


def test_aggregate_of_a_dataset_the_agreement_opens_to_records_only_is_refused(
    gw: Gateway,
) -> None:
    _refused(
        gw,
        "decision_exceeds_agreement",
        query={"kind": "aggregate", "group_by": ["marital_status"], "measures": ["count"]},
    )


def test_aggregate_k_below_the_agreement_is_refused(gw: Gateway) -> None:
    problem = _refused(
        gw,
        "obligation_exceeds_agreement",
        dataset=STATISTICS,
        query={"kind": "aggregate", "group_by": ["sex", "address_city"], "measures": ["count"]},
    )
    assert "min_k" in problem["detail"]


def test_aggregate_without_a_k_in_the_obligations_keeps_the_agreement_k(gw: Gateway) -> None:
    """The policy names no k: the agreement's 5 is the floor, not the release step's 2."""
    answer = _ask(
        gw,
        dataset=STATISTICS,
        query={
            "kind": "aggregate",
            "group_by": ["address_city", "marital_status"],
            "measures": ["count"],
        },
    )
    result = answer.result
    assert result["min_k"] == 5
    assert result["cells"], "the demo population has groups of five or more"
    assert all(c["count"] >= 5 for c in result["cells"])
    assert result["suppressed"] > 0  # the demo population has groups below five too


@pytest.mark.parametrize(
    ("group_by", "measures"),
    [(["sex"], ["count"]), (["address_city", "sex"], ["count"]), (["address_city"], ["sum(sex)"])],
)
def test_aggregate_only_groups_and_measures_what_the_agreement_lists(
    gw: Gateway, group_by: list[str], measures: list[str]
) -> None:
    """The agreement's ``aggregate.group_by`` and ``measures`` are part of what it
    signs: a table it does not list is refused before the provider is asked."""
    query = {"kind": "aggregate", "group_by": group_by, "measures": measures}
    with pytest.raises(AccordClientError) as err:
        _ask(gw, agreement=LISTED, query=query)
    assert (err.value.status, err.value.code) == (422, "aggregate_not_allowed")
    [entry] = [
        d
        for d in audit_docs(gw.env["ACCORD_DATABASE_URL"])
        if d.get("exchange_id") == err.value.exchange_id
    ]
    assert (entry["outcome"], entry["problem"]) == ("failed", "aggregate_not_allowed")
    # Control: the table the agreement lists is answered.
    answer = _ask(
        gw,
        agreement=LISTED,
        query={"kind": "aggregate", "group_by": ["address_city"], "measures": ["count"]},
    )
    assert answer.result["cells"] and answer.result["min_k"] == 2
