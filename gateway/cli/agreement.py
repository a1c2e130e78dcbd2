"""``accord agreement``: write, sign, verify and submit sharing agreements."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from gateway.agreements.signing import sign_agreement, verify_agreement_report
from gateway.agreements.terms import AgreementTerms
from gateway.cli.common import (
    console,
    err_console,
    handle_errors,
    load_json_bytes,
    load_json_file,
    open_services,
)
from gateway.cli.render import line, row, value
from gateway.errors import SignatureError
from gateway.jose import PublicKey, load_private_key_pem, public_key_from_jwk

agreement_app = typer.Typer(help="Sharing agreements.", no_args_is_help=True)
ACTOR = "cli:operator"


def template(agreement_id: str, provider: str, consumer: str, now: datetime) -> dict[str, Any]:
    return {
        "accord_agreement": "1",
        "id": agreement_id,
        "version": 1,
        "title": f"{provider} shares data with {consumer}",
        "provider": provider,
        "consumer": consumer,
        "required_parties": ["provider", "consumer"],
        "purposes": [
            {
                "code": "eligibility-check",
                "legal_basis": "State the statute and section",
                "description": "Why the consumer needs the data",
            }
        ],
        "classification_ceiling": "confidential",
        "caveats": [],
        "valid_from": now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "valid_until": (now + timedelta(days=365))
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z"),
        "quotas": {"per_minute": 60, "per_day": 10000},
        "datasets": [
            {
                "id": "person",
                "model": "person@1",
                "fields": {
                    "given_name": {"operation": "pass"},
                    "family_name": {"operation": "pass"},
                    "birth_date": {"operation": "generalise", "to": "year"},
                },
            }
        ],
        "retention": {"max_days": 30, "obligation": "Delete once the decision is made"},
        "onward_sharing": False,
    }


@agreement_app.command("init")
@handle_errors
def init(
    agreement_id: str,
    provider: Annotated[str, typer.Option()],
    consumer: Annotated[str, typer.Option()],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("agreement.json"),
) -> None:
    """Write a terms template to edit, valid against schemas/agreement.schema.json."""
    doc = template(agreement_id, provider, consumer, datetime.now(UTC))
    AgreementTerms.from_json(doc)
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(line("wrote ", str(out), "; edit it, then `accord agreement sign`"))


@agreement_app.command("sign")
@handle_errors
def sign(
    file: Annotated[Path, typer.Argument(help="Terms JSON, or an already signed agreement")],
    key: Annotated[Path, typer.Option(help="Signer's private key (PEM)")],
    party: Annotated[str, typer.Option(help="provider | consumer | authority")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Default: FILE.signed.json")
    ] = None,
) -> None:
    """Add a party's signature (JWS General JSON over the RFC 8785 canonical terms)."""
    doc = load_json_file(file)
    private = load_private_key_pem(key)
    if isinstance(doc, dict) and "signatures" in doc:
        signed = sign_agreement(doc, private, party=party)
    else:
        terms = AgreementTerms.from_json(doc)
        signed = sign_agreement(
            {"payload": "", "signatures": []}, private, party=party, terms=terms
        )
    target = out or (file if "signatures" in doc else file.with_suffix(".signed.json"))
    target.write_text(json.dumps(signed.to_json(), indent=2) + "\n", encoding="utf-8")
    console.print(
        line(party, " signed; wrote ", str(target), f" ({len(signed.signatures)} signature(s))")
    )


def _offline_resolver(jwk_files: list[Path]) -> Any:
    keys: dict[str, tuple[PublicKey, str]] = {}
    for path in jwk_files:
        doc = load_json_file(path)
        for jwk in doc.get("keys", [doc]) if isinstance(doc, dict) else []:
            key, alg = public_key_from_jwk(jwk)
            from gateway.jose import jwk_thumbprint

            keys[jwk_thumbprint(jwk)] = (key, alg)

    def resolve(kid: str, dept: str, now: datetime, signed_at: datetime) -> tuple[PublicKey, str]:
        if kid not in keys:
            raise SignatureError(f"no key {kid} among the given JWKs", code="unknown_key")
        return keys[kid]

    return resolve


@agreement_app.command("verify")
@handle_errors
def verify(
    file: Path,
    jwk: Annotated[
        list[Path] | None,
        typer.Option(
            help="Public JWK or JWK Set file (repeatable); without it the local registry is used"
        ),
    ] = None,
) -> None:
    """Verify a signed agreement and print each signature's status."""
    doc = load_json_file(file)
    now = datetime.now(UTC)
    if jwk:
        resolver = _offline_resolver(jwk)
        console.print(
            line(("offline: keys from files, validity and revocation not checked", "dim"))
        )
    else:
        resolver = open_services().agreements.resolve_key
    terms, _jws, statuses = verify_agreement_report(doc, resolver, now)
    table = Table("#", "party", "kid", "alg", "signed at", "status")
    for s in statuses:
        mark = value("ok", "green") if s.ok else line((s.code, "red"), ": ", s.detail)
        row(
            table,
            s.index,
            s.party,
            s.kid[:16] + "…",
            s.alg,
            s.signed_at.isoformat() if s.signed_at else "-",
            mark,
        )
    console.print(
        line("agreement ", (terms.ref, "bold"), " ", terms.provider, " → ", terms.consumer)
    )
    console.print(table)
    signed = {s.party for s in statuses if s.ok}
    missing = [p for p in terms.required_parties if p not in signed]
    if missing or not all(s.ok for s in statuses):
        if missing:
            err_console.print(line(("missing valid signature of: " + ", ".join(missing), "red")))
        raise typer.Exit(1)
    console.print(line(("all required signatures verify", "green")))


@agreement_app.command("submit")
@handle_errors
def submit(file: Path) -> None:
    """Submit a fully signed agreement to the registry; it becomes active (a version
    whose valid_from is ahead takes over from the one in force then). A refusal is
    audited with the SHA-256 of the file's bytes, as the API's is of the body sent."""
    signed, raw = load_json_bytes(file)
    agreements = open_services().agreements
    shown = agreements.public(agreements.submit(signed, actor=ACTOR, body=raw))
    console.print(_agreement_status(shown.agreement_id, shown.version, shown.status))


@agreement_app.command("status")
@handle_errors
def set_status(
    agreement_id: str,
    version: int,
    to: Annotated[str, typer.Option(help="active | suspended | revoked")],
    reason: Annotated[str, typer.Option()],
) -> None:
    """Suspend, reactivate or revoke an agreement version."""
    changed = open_services().agreements.transition(
        agreement_id, version, to, actor=ACTOR, reason=reason
    )
    console.print(_agreement_status(changed.agreement_id, changed.version, changed.status))


def _agreement_status(agreement_id: str, version: int, status: str) -> Text:
    return line("agreement ", (f"{agreement_id}@{version}", "bold"), " is ", status)


@agreement_app.command("list")
@handle_errors
def list_agreements() -> None:
    services = open_services()
    table = Table("id", "version", "provider", "consumer", "status")
    now = services.agreements.clock()
    for stored in services.agreements.list_all():
        row(
            table,
            stored.agreement_id,
            stored.version,
            stored.provider,
            stored.consumer,
            services.agreements.public(stored, now).status,
        )
    console.print(table)
