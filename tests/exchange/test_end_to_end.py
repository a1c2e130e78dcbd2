"""End to end over real HTTP: gateway + sample departments, on both stacks.

Each connector kind serves one agreement of the demo: the civil registry over
REST, the health insurer over SQL, the tax authority over SOAP and the welfare
office's CSV drop. After the exchanges, the audit log verifies with the auditor's
CLI and every receipt verifies against the published JWKS with jwcrypto.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
import sqlalchemy as sa
from jwcrypto import jwk, jws

from gateway.client import Denied, InvalidRequest, NotFound, ReceiptInvalid
from tests._support.gateway import Gateway
from tests.exchange.conftest import subject_with

PERSON = {
    "agreement": "welfare-person-lookup",
    "dataset": "person",
    "purpose": "benefit-eligibility",
}


def _verify_with_jwcrypto(gw: Gateway, receipt: str) -> dict[str, Any]:
    keys = jwk.JWKSet.from_json(httpx.get(gw.url + "/.well-known/jwks.json").text)
    token = jws.JWS()
    token.deserialize(receipt)
    token.verify(keys)
    claims: dict[str, Any] = json.loads(token.payload)
    return claims


def test_record_over_rest_is_released_as_the_agreement_says(gateway: Gateway) -> None:
    subject = subject_with("civil")
    answer = gateway.client("welfare-office").exchange(
        **PERSON, query={"kind": "record", "subject": subject}
    )
    record = answer.records[0]
    assert answer.body["released"]["person_id"] == "pseudonymise"
    assert record["person_id"] != subject and record["person_id"].startswith("ps1_")
    assert "birth_date" not in record  # verify-only never leaves as a value
    assert "address_street" not in record  # not in the agreement
    assert " " not in record["address_postcode"]  # generalised to the district
    claims = _verify_with_jwcrypto(gateway, answer.receipt)
    assert claims["exchange_id"] == answer.exchange_id
    assert (
        claims["response_sha256"]
        == hashlib.sha256(rfc8785.dumps(answer.body["result"])).hexdigest()
    )
    assert claims["agreement"] == "welfare-person-lookup@1"


def test_consumer_gets_records_in_its_own_schema(gateway: Gateway) -> None:
    answer = gateway.client("welfare-office").exchange(
        **PERSON,
        query={"kind": "record", "subject": subject_with("civil")},
        target_schema="welfare-client",
    )
    record = answer.records[0]
    assert record["CLIENT_ID"].startswith("ps1_")  # still the pseudonym: mapping runs after release
    assert record["SURNAME"] == record["SURNAME"].upper()
    assert "BIRTH_DATE" not in record  # verify-only in the agreement: never released, never mapped
    assert set(record) <= {
        "CLIENT_ID",
        "SURNAME",
        "FORENAMES",
        "CIVIL_STATE",
        "ADDRESS_LINE",
        "CITY",
    }


def test_consumer_schema_for_another_model_is_refused(gateway: Gateway) -> None:
    with pytest.raises(InvalidRequest) as err:
        gateway.client("welfare-office").exchange(
            agreement="welfare-tax-status",
            dataset="tax-status",
            purpose="benefit-eligibility",
            query={"kind": "record", "subject": subject_with("civil")},
            target_schema="welfare-client",
        )
    assert err.value.code == "target_schema_mismatch"


def test_verify_only_answers_yes_or_no(gateway: Gateway) -> None:
    answer = gateway.client("welfare-office").exchange(
        **PERSON,
        query={"kind": "verify", "subject": subject_with("civil"), "predicate": "age_over(18)"},
    )
    assert answer.result == {"kind": "verify", "predicate": "age_over(18)", "result": True}
    assert answer.body["released"] == {"birth_date": "verify_only"}


def test_predicate_the_agreement_does_not_list_is_refused(gateway: Gateway) -> None:
    with pytest.raises(Exception) as err:
        gateway.client("welfare-office").exchange(
            **PERSON,
            query={"kind": "verify", "subject": subject_with("civil"), "predicate": "age_over(21)"},
        )
    assert getattr(err.value, "code", None) == "predicate_not_allowed"


def test_aggregate_suppresses_small_cells(gateway: Gateway) -> None:
    answer = gateway.client("welfare-office").exchange(
        agreement="welfare-person-lookup",
        dataset="person-statistics",
        purpose="benefit-eligibility",
        query={"kind": "aggregate", "group_by": ["address_city", "marital_status"]},
    )
    result = answer.result
    assert result["min_k"] == 5
    assert result["cells"], "some cells are large enough"
    assert all(cell["count"] >= 5 for cell in result["cells"])
    total = sum(cell["count"] for cell in result["cells"])
    assert total < 240 and result["suppressed"] > 0  # small groups were withheld


def test_sql_connector_health_cover(gateway: Gateway) -> None:
    answer = gateway.client("welfare-office").exchange(
        agreement="welfare-health-cover",
        dataset="health-coverage",
        purpose="benefit-eligibility",
        query={"kind": "record", "subject": subject_with("health")},
    )
    record = answer.records[0]
    assert record["plan"] in {"basic", "comprehensive", "premium"}
    assert len(record["start_date"]) == 7  # generalised to the month
    assert "monthly_premium" not in record


def test_soap_connector_tax_status(gateway: Gateway) -> None:
    answer = gateway.client("welfare-office").exchange(
        agreement="welfare-tax-status",
        dataset="tax-status",
        purpose="benefit-eligibility",
        query={"kind": "record", "subject": subject_with("civil")},
    )
    record = answer.records[0]
    assert record["filing_status"] in {
        "single",
        "married_joint",
        "married_separate",
        "head_of_household",
    }
    assert "assessed_income" not in record  # restricted, and not in the agreement


def test_csv_connector_benefit_claims(gateway: Gateway) -> None:
    answer = gateway.client("tax-authority").exchange(
        agreement="tax-benefit-claims",
        dataset="benefit-claim",
        purpose="income-assessment",
        query={"kind": "record", "subject": subject_with("claims")},
    )
    record = answer.records[0]
    assert record["person_id"] == subject_with("claims")
    assert set(record) <= {"claim_id", "person_id", "status", "monthly_amount", "filed_on"}


def test_unknown_subject_is_not_found_and_releases_nothing(gateway: Gateway) -> None:
    with pytest.raises(NotFound) as err:
        gateway.client("welfare-office").exchange(
            **PERSON, query={"kind": "record", "subject": "99999999999"}
        )
    assert err.value.code == "subject_not_found"
    assert err.value.exchange_id


def test_denial_lists_every_reason(gateway: Gateway) -> None:
    with pytest.raises(Denied) as err:
        gateway.client("welfare-office").exchange(
            agreement="welfare-person-lookup",
            dataset="person",
            purpose="marketing",
            fields=["given_name", "address_street"],
            query={"kind": "record", "subject": subject_with("civil")},
        )
    assert {"purpose_not_permitted", "field_not_permitted"} <= set(err.value.reasons)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"agreement": "no-such-agreement"}, "no_agreement"),
        ({"dataset": "health-coverage"}, "dataset_not_covered"),
        ({"fields": ["no_such_field"]}, "field_not_permitted"),
    ],
)
def test_a_refusal_names_only_what_is_wrong(
    gateway: Gateway, change: dict[str, Any], reason: str
) -> None:
    """No level, caveat or legal-basis reason about a field the agreement does not
    release: the one true reason, alone."""
    with pytest.raises(Denied) as err:
        gateway.client("welfare-office").exchange(
            **{**PERSON, **change}, query={"kind": "record", "subject": subject_with("civil")}
        )
    assert err.value.reasons == [reason]


def test_aggregate_only_fields_are_refused_to_a_record_query_whoever_the_subject(
    gateway: Gateway,
) -> None:
    """A record query on a dataset the agreement releases only in aggregates is refused
    before anything is fetched, with the same answer for a registered subject and an
    unknown one: an empty record would have told them apart."""
    client = gateway.client("welfare-office")
    answers = []
    for subject in (subject_with("civil"), "00000000000"):
        with pytest.raises(Denied) as err:
            client.exchange(
                agreement="welfare-person-lookup",
                dataset="person-statistics",
                purpose="benefit-eligibility",
                query={"kind": "record", "subject": subject},
            )
        answers.append((err.value.status, sorted(set(err.value.reasons))))
    assert answers[0] == answers[1] == (403, ["aggregate_only"])
    with pytest.raises(Denied) as err:
        client.exchange(
            agreement="welfare-person-lookup",
            dataset="person-statistics",
            purpose="benefit-eligibility",
            fields=["sex"],
            query={"kind": "record", "subject": subject_with("civil")},
        )
    assert err.value.reasons == ["aggregate_only"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("released", {"given_name": "pass", "birth_date": "pass"}),
        ("agreement", "welfare-person-lookup@99"),
        ("policy_version", "sha256:" + "0" * 64),
        ("audit", {"seq": 0, "leaf_hash": "00" * 32}),
    ],
)
def test_an_answer_whose_summary_differs_from_its_receipt_is_refused(
    gateway: Gateway, key: str, value: Any
) -> None:
    """The client holds the answer's unsigned summary to the signed receipt."""
    client = gateway.client("welfare-office")
    query = {"kind": "record", "subject": subject_with("civil")}
    answer = client.exchange(**PERSON, query=query)
    body = json.dumps({**PERSON, "query": query}).encode()  # as the client sent it
    client.verify_answer(answer.body, body)
    with pytest.raises(ReceiptInvalid) as err:
        client.verify_answer({**answer.body, key: value}, body)
    assert err.value.code == "receipt_mismatch"


def test_an_inclusion_proof_counts_only_for_the_receipt_it_came_with(gateway: Gateway) -> None:
    """The proof is checked against the receipt's signed seq and leaf hash: a proof of
    another entry, a receipt of another exchange or an altered receipt all fail."""
    client = gateway.client("welfare-office")
    first, second = (
        client.exchange(**PERSON, query={"kind": "record", "subject": subject_with("civil")})
        for _ in range(2)
    )
    gateway.audit_cli("checkpoint").check_returncode()
    a, b = client.receipt(first.exchange_id), client.receipt(second.exchange_id)
    client.verify_inclusion(a)
    client.verify_inclusion(b)
    spliced = {**a, "seq": b["seq"], "inclusion_proof": b["inclusion_proof"]}
    with pytest.raises(ReceiptInvalid) as err:
        client.verify_inclusion(spliced)
    assert err.value.code == "proof_mismatch"
    with pytest.raises(ReceiptInvalid) as err:
        client.verify_inclusion({**b, "receipt": a["receipt"]})
    assert err.value.code == "receipt_mismatch"
    head, payload, sig = a["receipt"].split(".")
    altered = ".".join([head, payload, ("A" if sig[0] != "A" else "B") + sig[1:]])
    with pytest.raises(ReceiptInvalid) as err:
        client.verify_inclusion({**a, "receipt": altered})
    assert err.value.code == "receipt_invalid"


def test_receipt_with_inclusion_proof_and_citizen_access_log(gateway: Gateway) -> None:
    subject = subject_with("civil")
    client = gateway.client("welfare-office")
    answer = client.exchange(**PERSON, query={"kind": "record", "subject": subject})
    gateway.audit_cli("checkpoint").check_returncode()
    found = client.receipt(answer.exchange_id)
    assert found["receipt"] == answer.receipt  # rebuilt from the log, byte for byte
    assert client.verify_inclusion(found)["seq"] == found["seq"]
    portal = gateway.client("citizen-portal")
    log = portal.accesses(subject)
    ids = [a["exchange_id"] for a in log["accesses"]]
    assert answer.exchange_id in ids
    mine = log["accesses"][ids.index(answer.exchange_id)]
    assert mine["consumer"] == "welfare-office"
    assert mine["purpose"] == "benefit-eligibility"
    assert "Social Welfare Act" in mine["legal_basis"]
    with pytest.raises(Denied):
        client.accesses(subject)  # only a citizen-portal system may ask


def test_audit_log_verifies_after_the_run(gateway: Gateway) -> None:
    client = gateway.client("welfare-office")
    answers = [
        client.exchange(**PERSON, query={"kind": "record", "subject": subject_with("civil")}),
        client.exchange(
            agreement="welfare-tax-status",
            dataset="tax-status",
            purpose="benefit-eligibility",
            query={"kind": "record", "subject": subject_with("civil")},
        ),
        gateway.client("tax-authority").exchange(
            agreement="tax-benefit-claims",
            dataset="benefit-claim",
            purpose="income-assessment",
            query={"kind": "record", "subject": subject_with("claims")},
        ),
    ]
    for answer in answers:  # every receipt, checked by an independent JOSE library
        claims = _verify_with_jwcrypto(gateway, answer.receipt)
        assert claims["seq"] == answer.body["audit"]["seq"]
    out = gateway.audit_cli("verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified" in out.stdout


def test_metrics_and_readiness(gateway: Gateway) -> None:
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) >= {"database", "policy_engine", "audit_log"}
    text = httpx.get(gateway.url + "/metrics").text
    assert 'accord_exchanges_total{consumer="welfare-office"' in text
    assert 'accord_exchange_stage_seconds_bucket{le="0.005",stage="decide"}' in text
    engine = [line for line in text.splitlines() if line.startswith("accord_policy_engine{")]
    assert len(engine) == 1 and engine[0].endswith(" 1.0")
    # the embedded default decides on the VM; the production shape on the OPA server
    assert ('evaluator="vm"' in engine[0]) != ('evaluator="server"' in engine[0])


def test_curl_path_with_a_token_from_the_cli(embedded_gateway: Gateway, tmp_path: Path) -> None:
    gw = embedded_gateway
    body = json.dumps({**PERSON, "query": {"kind": "record", "subject": subject_with("civil")}})
    (tmp_path / "req.json").write_text(body)
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli.main",
            "token",
            "request",
            "--department",
            "welfare-office",
            "--system",
            "benefits-app",
            "--key",
            str(gw.data_dir / "demo-keys" / "welfare-office.pem"),
            "--body",
            str(tmp_path / "req.json"),
        ],
        env={**gw.env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    first = httpx.post(gw.url + "/v1/exchanges", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["result"]["records"][0]["given_name"]
    again = httpx.post(gw.url + "/v1/exchanges", content=body, headers=headers)
    assert again.status_code == 401 and again.json()["code"] == "token_replayed"


def test_decisions_reach_the_log_the_impact_dry_run_replays(gateway: Gateway) -> None:
    answer = gateway.client("welfare-office").exchange(
        **PERSON, query={"kind": "record", "subject": subject_with("civil")}
    )
    engine = sa.create_engine(gateway.env["ACCORD_DATABASE_URL"])
    deadline = time.monotonic() + 10
    row = None
    while row is None and time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT allow, input FROM policy_decision WHERE exchange_id = :e"),
                {"e": answer.exchange_id},
            ).first()
        time.sleep(0.1)
    engine.dispose()
    assert row is not None, "the decision was not logged"
    assert row[0] in (True, 1)
    assert subject_with("civil") not in str(row[1])  # inputs hold labels and codes, no values
