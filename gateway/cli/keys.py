"""``accord keys``: generate department keys and the gateway's own keys."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import console, err_console, handle_errors, settings
from gateway.cli.render import line
from gateway.jose import generate_private_key, private_key_pem, public_jwk
from gateway.services import load_or_create_key

keys_app = typer.Typer(help="Generate signing keys.", no_args_is_help=True)


@keys_app.command("generate")
@handle_errors
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Private key file to write (PEM, 0600)")],
    alg: Annotated[str, typer.Option(help="EdDSA (Ed25519) or ES256 (P-256)")] = "EdDSA",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file")] = False,
) -> None:
    """Write a new private key file and print its public JWK (kid = RFC 7638 thumbprint)."""
    if out.exists() and not force:
        err_console.print(
            line(("error", "red"), " ", str(out), " exists; use --force to overwrite")
        )
        raise typer.Exit(1)
    key = generate_private_key(alg)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_pem(key))
    os.chmod(out, 0o600)
    print(json.dumps(public_jwk(key), indent=2))


@keys_app.command("public")
@handle_errors
def public(key_file: Path) -> None:
    """Print the public JWK of a private key file."""
    from gateway.jose import load_private_key_pem

    print(json.dumps(public_jwk(load_private_key_pem(key_file)), indent=2))


@keys_app.command("init-gateway")
@handle_errors
def init_gateway() -> None:
    """Create the gateway's receipt key and audit-log key if they do not exist."""
    cfg = settings()
    key_dir = cfg.resolved_key_dir
    for name in ("gateway.pem", "log.pem"):
        key = load_or_create_key(key_dir / name, create=True)
        console.print(line(name, ": kid ", (public_jwk(key)["kid"], "bold")))
