"""Signed agreements on both databases: verification, bad input, lifecycle."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from gateway.agreements.models import Agreement
from gateway.agreements.signing import sign_agreement
from gateway.agreements.terms import AgreementTerms
from gateway.errors import AccordError, AgreementError, ConflictError, SignatureError
from gateway.jose import b64url_decode, b64url_encode, generate_private_key, public_jwk
from gateway.registry.models import KeyCreate
from tests.gateway.conftest import Clock, Parties


def stored(parties: Parties) -> list[Agreement]:
    with Session(parties.services.engine) as s:
        return list(s.exec(select(Agreement)))


def test_fully_signed_agreement_becomes_active(parties: Parties) -> None:
    row = parties.services.agreements.submit(parties.sign(parties.terms()), actor="t")
    assert row.status == "active"
    events = parties.services.agreements.events("person-lookup", 1)
    assert [e.to_status for e in events] == ["active"]
    assert events[0].actor == "t"


def test_three_party_agreement_needs_the_authority(parties: Parties) -> None:
    doc = parties.terms(
        authority="data-authority", required_parties=["provider", "consumer", "authority"]
    )
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(parties.sign(doc), actor="t")
    assert err.value.code == "missing_signature"
    row = parties.services.agreements.submit(
        parties.sign(doc, ("provider", "consumer", "authority")), actor="t"
    )
    assert row.status == "active"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda p, s: s["signatures"].pop(), "missing_signature"),
        (
            lambda p, s: s["signatures"].append(copy.deepcopy(s["signatures"][0])),
            "duplicate_signature",
        ),
        (
            lambda p, s: s.update(
                payload=s["payload"][:-2] + ("AA" if s["payload"][-2:] != "AA" else "BB")
            ),
            None,
        ),
        (
            lambda p, s: s["signatures"][0].update(signature=s["signatures"][1]["signature"]),
            "signature_invalid",
        ),
        (lambda p, s: s.update(extra="x"), "malformed_jws"),
        (lambda p, s: s["signatures"][0].update(header={"kid": "x"}), "malformed_jws"),
    ],
    ids=[
        "missing",
        "duplicated",
        "tampered_payload",
        "swapped_signature",
        "unknown_member",
        "unprotected_header",
    ],
)
def test_bad_signatures_are_refused_and_nothing_stored(parties: Parties, mutate, code) -> None:
    signed = parties.sign(parties.terms())
    mutate(parties, signed)
    with pytest.raises(AccordError) as err:
        parties.services.agreements.submit(signed, actor="t")
    if code:
        assert err.value.code == code
    assert stored(parties) == []


def test_signature_by_the_wrong_party_key_is_refused(parties: Parties) -> None:
    terms = AgreementTerms.from_json(parties.terms())
    jws = sign_agreement(
        {"payload": "", "signatures": []},
        parties.keys["civil-registry"],
        party="provider",
        terms=terms,
        now=parties.services.agreements.clock(),
    )
    # The consumer's slot signed with the provider's key.
    jws = sign_agreement(
        jws,
        parties.keys["data-authority"],
        party="consumer",
        now=parties.services.agreements.clock(),
    )
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(jws.to_json(), actor="t")
    assert err.value.code == "wrong_department_key"
    assert stored(parties) == []


def test_unknown_key_is_refused(parties: Parties) -> None:
    terms = AgreementTerms.from_json(parties.terms())
    stranger = generate_private_key()
    jws = sign_agreement(
        {"payload": "", "signatures": []},
        stranger,
        party="provider",
        terms=terms,
        now=parties.services.agreements.clock(),
    )
    jws = sign_agreement(
        jws,
        parties.keys["welfare-office"],
        party="consumer",
        now=parties.services.agreements.clock(),
    )
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(jws.to_json(), actor="t")
    assert err.value.code == "unknown_key"


def test_key_revoked_before_signing_is_refused(parties: Parties, clock: Clock) -> None:
    kid = public_jwk(parties.keys["civil-registry"])["kid"]
    parties.services.registry.revoke_key(
        kid, "laptop stolen", actor="t", at=clock() - timedelta(hours=1)
    )
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(parties.sign(parties.terms()), actor="t")
    assert err.value.code == "key_revoked"
    assert stored(parties) == []


def test_revoking_a_key_later_stops_reactivation(parties: Parties, clock: Clock) -> None:
    svc = parties.services.agreements
    svc.submit(parties.sign(parties.terms()), actor="t")
    svc.transition("person-lookup", 1, "suspended", actor="t", reason="investigation")
    clock.advance(hours=1)
    kid = public_jwk(parties.keys["welfare-office"])["kid"]
    parties.services.registry.revoke_key(kid, "compromised", actor="t")
    with pytest.raises(SignatureError) as err:
        svc.transition("person-lookup", 1, "active", actor="t", reason="resume")
    assert err.value.code == "key_revoked"
    assert svc.get("person-lookup", 1).status == "suspended"


def test_rotated_key_signs_while_old_key_still_valid(parties: Parties, clock: Clock) -> None:
    new = generate_private_key("ES256")
    parties.services.registry.add_key("civil-registry", KeyCreate(jwk=public_jwk(new)), actor="t")
    clock.advance(seconds=5)
    parties.keys["civil-registry"] = new
    assert (
        parties.services.agreements.submit(parties.sign(parties.terms()), actor="t").status
        == "active"
    )


def test_ceiling_above_consumer_clearance_is_refused(parties: Parties) -> None:
    doc = parties.terms(consumer="low-clearance", classification_ceiling="confidential")
    with pytest.raises(AgreementError) as err:
        parties.services.agreements.submit(parties.sign(doc), actor="t")
    assert err.value.code == "ceiling_exceeds_clearance"
    assert stored(parties) == []


def test_schema_violation_names_the_field(parties: Parties) -> None:
    doc = parties.terms()
    doc["quotas"]["per_day"] = -1
    with pytest.raises(AccordError) as err:
        parties.services.agreements.create_draft(doc, actor="t")
    assert err.value.code == "agreement_schema_violation"
    assert err.value.extra["errors"][0]["field"] == "/quotas/per_day"


def test_new_version_needs_new_signatures_and_supersedes(parties: Parties) -> None:
    svc = parties.services.agreements
    signed = parties.sign(parties.terms())
    svc.submit(signed, actor="t")
    with pytest.raises(ConflictError):
        svc.submit(signed, actor="t")
    v2 = parties.sign(parties.terms(version=2, title="Version two"))
    assert svc.submit(v2, actor="t").status == "active"
    assert svc.get("person-lookup", 1).status == "superseded"
    assert svc.get("person-lookup").version == 2


def test_draft_then_signed_activates_the_draft(parties: Parties) -> None:
    svc = parties.services.agreements
    assert svc.create_draft(parties.terms(), actor="t").status == "draft"
    row = svc.submit(parties.sign(parties.terms()), actor="t")
    assert row.status == "active"
    assert [e.to_status for e in svc.events("person-lookup", 1)] == ["draft", "active"]


def test_lifecycle_transitions_and_expiry(parties: Parties, clock: Clock) -> None:
    svc = parties.services.agreements
    svc.submit(parties.sign(parties.terms()), actor="t")
    svc.transition("person-lookup", 1, "suspended", actor="officer", reason="audit finding")
    svc.transition("person-lookup", 1, "active", actor="officer", reason="resolved")
    with pytest.raises(ConflictError):
        svc.transition("person-lookup", 1, "draft", actor="officer", reason="no")
    clock.now = AgreementTerms(svc.get("person-lookup", 1).terms).valid_until
    assert svc.status_at(svc.get("person-lookup", 1), clock()) == "expired"
    assert svc.expire_due() == 1
    events = svc.events("person-lookup", 1)
    assert [e.to_status for e in events] == ["active", "suspended", "active", "expired"]
    assert events[1].reason == "audit finding"


def test_signature_in_the_future_is_refused(parties: Parties, clock: Clock) -> None:
    signed = parties.sign(parties.terms(), now=clock() + timedelta(hours=2))
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(signed, actor="t")
    assert err.value.code in {"signed_in_future", "key_not_valid_at_signing"}


def test_payload_must_be_canonical(parties: Parties) -> None:
    signed = parties.sign(parties.terms())
    pretty = b64url_encode(b64url_decode(signed["payload"]).replace(b",", b", "))
    signed["payload"] = pretty
    with pytest.raises(SignatureError) as err:
        parties.services.agreements.submit(signed, actor="t")
    assert err.value.code == "payload_not_canonical"


def test_a_value_ending_in_a_newline_does_not_pass_an_anchored_pattern(
    parties: Parties,
) -> None:
    """``^…$`` in the agreement schema is the whole string, as JSON Schema defines it."""
    doc = parties.terms()
    doc["datasets"][0]["model"] = "person@1\n"
    with pytest.raises(AccordError) as err:
        parties.services.agreements.create_draft(doc, actor="t")
    assert err.value.code == "agreement_schema_violation"
    assert err.value.extra["errors"][0]["field"] == "/datasets/0/model"
