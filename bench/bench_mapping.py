"""Mapping throughput: compiled declarative specs vs hand-written Python, per core.

Run ``python -m bench.bench_mapping``. For each sample spec the same records
go through (a) the compiled mapping and (b) a hand-written function doing the
same translation; both outputs are checked equal first, so the comparison is
like for like. Rows are printed side by side with the ratio (target: the
compiled spec reaches at least 50% of hand-written speed). Numbers are
records/s on one core; the ``+schema`` rows include JSON Schema validation of
the output on both sides, by the same check (``CompiledMapping.validate``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from connectors.mapping import CompiledMapping, load_mapping
from examples.launch import EXAMPLES, mapping_path

Record = Mapping[str, Any]
Fn = Callable[[Record], dict[str, Any]]


class Bad(Exception):
    pass


def _need(v: Any) -> Any:
    if v is None or v == "":
        raise Bad("required")
    return v


def _d(text: str, fmt: str) -> str:
    return dt.datetime.strptime(text, fmt).date().isoformat()


# --------------------------------------------------------------------------- hand-written

GENDER = {"F": "female", "M": "male", "X": "other"}
CIVIL = {"S": "single", "M": "married", "D": "divorced", "W": "widowed"}


def citizen(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"person_id": _need(r.get("ssn"))}
    name = r.get("name") or {}
    if name.get("first"):
        out["given_name"] = name["first"].strip()
    if name.get("last"):
        out["family_name"] = name["last"].strip()
    if r.get("dob"):
        out["birth_date"] = _d(r["dob"], "%d/%m/%Y")
    if r.get("gender"):
        out["sex"] = GENDER[r["gender"]]
    if r.get("civil_status"):
        out["marital_status"] = CIVIL[r["civil_status"]]
    res = r.get("residence") or {}
    if res.get("street"):
        out["address_street"] = res["street"]
    if res.get("city"):
        out["address_city"] = res["city"]
    if res.get("zip"):
        out["address_postcode"] = res["zip"].upper()
    if r.get("household_ref"):
        out["household_id"] = r["household_ref"]
    if r.get("registered_at"):
        out["registered_at"] = dt.datetime.strptime(
            r["registered_at"], "%Y-%m-%dT%H:%M:%S%z"
        ).isoformat()
    return out


PLAN = {"BAS": "basic", "CMP": "comprehensive", "PRM": "premium"}
STATUS = {"1": "active", "2": "suspended", "9": "terminated"}


def member_cover(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"person_id": _need(r.get("MEMBER_SSN"))}
    if r.get("POLICY_NO"):
        out["policy_number"] = r["POLICY_NO"]
    if r.get("PLAN_CD"):
        out["plan"] = PLAN[r["PLAN_CD"]]
    if r.get("STATUS_CD") is not None:
        out["status"] = STATUS[str(r["STATUS_CD"])]
    if r.get("START_YMD") is not None:
        out["start_date"] = _d(str(r["START_YMD"]), "%Y%m%d")
    if r.get("END_YMD") is not None:
        out["end_date"] = _d(str(r["END_YMD"]), "%Y%m%d")
    if r.get("PREMIUM_CENTS") is not None:
        cents = Decimal(str(r["PREMIUM_CENTS"])).scaleb(-2).quantize(Decimal("0.01"))
        out["monthly_premium"] = format(cents, "f")
    if r.get("BRANCH"):
        out["branch_city"] = r["BRANCH"]
    return out


FILING = {"S": "single", "MJ": "married_joint", "MS": "married_separate", "HH": "head_of_household"}
RESIDENCY = {"R": True, "NR": False}
COMPLIANCE = {"GOOD": "good_standing", "ARREARS": "in_arrears", "UNDER_REVIEW": "under_review"}


def tax_status(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"person_id": _need(r.get("TaxpayerId"))}
    if r.get("FilingStatus"):
        out["filing_status"] = FILING[r["FilingStatus"]]
    if r.get("Residency"):
        out["resident"] = RESIDENCY[r["Residency"]]
    if r.get("LastAssessmentYear"):
        out["last_assessment_year"] = int(r["LastAssessmentYear"])
    if r.get("AssessedIncome"):
        out["assessed_income"] = format(Decimal(r["AssessedIncome"]).quantize(Decimal("0.01")), "f")
    if r.get("Compliance"):
        out["compliance"] = COMPLIANCE[r["Compliance"]]
    if r.get("LastFilingDate"):
        out["last_filing_date"] = _d(r["LastFilingDate"], "%Y%m%d")
    return out


LEGAL = {"LTD": "limited_company", "PLC": "public_limited_company", "SOLE": "sole_trader",
         "COOP": "cooperative"}  # fmt: skip
BSTATUS = {"A": "active", "D": "dissolved", "L": "in_liquidation"}


def business(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"registration_number": _need(r.get("CompanyNumber"))}
    if r.get("TradingName"):
        out["trading_name"] = r["TradingName"]
    if r.get("LegalForm"):
        out["legal_form"] = LEGAL[r["LegalForm"]]
    if r.get("RegisteredOn"):
        out["registered_on"] = _d(r["RegisteredOn"], "%d.%m.%Y")
    if r.get("ActivityCode"):
        out["activity_code"] = r["ActivityCode"]
    if r.get("StatusCode"):
        out["status"] = BSTATUS[r["StatusCode"]]
    if r.get("LegalForm") == "SOLE" and r.get("OwnerTaxpayerId"):
        out["owner_person_id"] = r["OwnerTaxpayerId"]
    return out


BENEFIT = {"01": "unemployment", "02": "housing", "03": "child", "04": "disability"}
CSTATUS = {"O": "open", "A": "approved", "R": "rejected", "C": "closed"}


def claim(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {
        "claim_id": _need(r.get("CLAIM_REF")),
        "person_id": _need(r.get("CLAIMANT_ID")),
    }
    if r.get("BENEFIT"):
        out["benefit_type"] = BENEFIT[r["BENEFIT"]]
    if r.get("STATUS"):
        out["status"] = CSTATUS[r["STATUS"]]
    if r.get("FILED"):
        out["filed_on"] = _d(r["FILED"], "%d-%m-%Y")
    if r.get("MONTHLY_AMT"):
        amount = r["MONTHLY_AMT"].replace(".", "").replace(",", ".")
        out["monthly_amount"] = format(Decimal(amount).quantize(Decimal("0.01")), "f")
    if r.get("HH_SIZE"):
        out["household_size"] = int(r["HH_SIZE"])
    return out


SEX_OUT = {"female": "V", "male": "M", "other": "X"}
CIVIL_OUT = {"single": "ONG", "married": "GEH", "divorced": "GES", "widowed": "WED"}


def client(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"CLIENT_ID": _need(r.get("person_id"))}
    if r.get("family_name"):
        out["SURNAME"] = r["family_name"].upper()
    if r.get("given_name"):
        out["FORENAMES"] = r["given_name"]
    if r.get("birth_date"):
        out["BIRTH_DATE"] = dt.date.fromisoformat(r["birth_date"]).strftime("%d-%m-%Y")
    if r.get("sex"):
        out["SEX"] = SEX_OUT[r["sex"]]
    if r.get("marital_status"):
        out["CIVIL_STATE"] = CIVIL_OUT[r["marital_status"]]
    parts = [r.get(k) for k in ("address_street", "address_postcode", "address_city")]
    line = ", ".join(p for p in parts if p)
    if line:
        out["ADDRESS_LINE"] = line
    if r.get("address_city"):
        out["CITY"] = r["address_city"].upper()
    if r.get("household_id"):
        out["HOUSEHOLD_REF"] = r["household_id"]
    return out


# --------------------------------------------------------------------------- samples


def _civil_docs() -> list[dict[str, Any]]:
    from examples.civil_registry.app import seed

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "civil.db"
        seed(db)
        conn = sqlite3.connect(db)
        try:
            return [json.loads(r[0]) for r in conn.execute("SELECT doc FROM citizen")]
        finally:
            conn.close()


def cases() -> list[tuple[str, CompiledMapping, Fn, list[Record]]]:
    from examples.health_insurer.db import rows as health_rows
    from examples.tax_authority.app import business_records, tax_records
    from examples.welfare_office.export import rows as welfare_rows

    civil = _civil_docs()
    person = load_mapping(mapping_path("civil_registry", "citizen"))
    canonical_people = [person.map(d) for d in civil]
    return [
        ("civil_registry/citizen", person, citizen, list(civil)),
        (
            "health_insurer/member_cover",
            load_mapping(mapping_path("health_insurer", "member_cover")),
            member_cover,
            list(health_rows()),
        ),
        (
            "tax_authority/tax_status",
            load_mapping(mapping_path("tax_authority", "tax_status")),
            tax_status,
            list(tax_records().values()),
        ),
        (
            "tax_authority/business",
            load_mapping(mapping_path("tax_authority", "business")),
            business,
            list(business_records().values()),
        ),
        (
            "welfare_office/claim",
            load_mapping(mapping_path("welfare_office", "claim")),
            claim,
            list(welfare_rows()),
        ),
        (
            "person -> welfare client",
            load_mapping(EXAMPLES / "welfare_office" / "person.consumer.mapping.yaml"),
            client,
            list(canonical_people),
        ),
    ]


def _rate(fn: Fn, records: list[Record], seconds: float) -> float:
    """Best-of-5 records/s, each round running for about ``seconds / 5``."""
    n = len(records)
    reps = 1
    while True:  # calibrate
        t0 = time.perf_counter()
        for _ in range(reps):
            for r in records:
                fn(r)
        spent = time.perf_counter() - t0
        if spent > 0.02:
            break
        reps *= 4
    per_round = max(1, int(reps * (seconds / 5) / spent))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(per_round):
            for r in records:
                fn(r)
        best = min(best, time.perf_counter() - t0)
    return per_round * n / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_mapping")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args(argv)
    rows = []
    for name, compiled, hand, records in cases():
        for r in records:
            if compiled.map_unvalidated(r) != hand(r):
                raise SystemExit(f"{name}: hand-written function differs from the spec")
        assert compiled.validator is not None

        # The same check on both sides (the compiled mapping's, with its jsonschema_rs
        # pre-check): the ratio then compares the translations, not two validators.
        def hand_valid(r: Record, hand: Fn = hand, c: Any = compiled) -> dict[str, Any]:
            out = hand(r)
            c.validate(out)
            return out

        spec_rate = _rate(compiled.map_unvalidated, records, args.seconds)
        hand_rate = _rate(hand, records, args.seconds)
        spec_v = _rate(compiled.map, records, args.seconds)
        hand_v = _rate(hand_valid, records, args.seconds)
        rows.append((name, spec_rate, hand_rate, spec_v, hand_v))

    head = f"{'spec':<30} {'compiled/s':>11} {'hand/s':>11} {'ratio':>6}   "
    head += f"{'+schema c/s':>11} {'+schema h/s':>11} {'ratio':>6}"
    print("mapping throughput, records per second on one core (best of 5)")
    print(head)
    print("-" * len(head))
    for name, s, h, sv, hv in rows:
        print(f"{name:<30} {s:>11,.0f} {h:>11,.0f} {s / h:>5.0%}   {sv:>11,.0f} {hv:>11,.0f} "
              f"{sv / hv:>5.0%}")  # fmt: skip
    worst = min(s / h for _, s, h, _, _ in rows)
    print(f"\nworst compiled/hand-written ratio: {worst:.0%} (target >= 50%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
