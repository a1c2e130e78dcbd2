"""Entry point of the ``accord`` console script; sub-commands live in sibling modules."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from audit.cli import audit_app
from gateway.auth.requests import MAX_LIFETIME_S
from gateway.cli.agreement import agreement_app
from gateway.cli.common import (
    console,
    err_console,
    handle_errors,
    open_services,
    read_file_bytes,
    settings,
)
from gateway.cli.dept import dept_app
from gateway.cli.keys import keys_app
from gateway.cli.policy import policy_app
from gateway.cli.render import line, value
from gateway.db import is_sqlite

app = typer.Typer(
    name="accord",
    help="Accord: a secure data-exchange gateway for government departments.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
token_app = typer.Typer(help="Tokens for people and department systems.", no_args_is_help=True)

app.add_typer(keys_app, name="keys")
app.add_typer(dept_app, name="dept")
app.add_typer(agreement_app, name="agreement")
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")


@db_app.command("upgrade")
@handle_errors
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations to ACCORD_DATABASE_URL (SQLite by default)."""
    from gateway.db import make_engine, upgrade

    cfg = settings()
    engine = make_engine(cfg.resolved_database_url)
    upgrade(engine, revision)
    url = engine.url.render_as_string(hide_password=True)
    console.print(line("database at ", url, " is at ", revision))


@token_app.command("issue")
@handle_errors
def token_issue(
    role: Annotated[list[str], typer.Option(help="admin | officer | auditor | department")],
    sub: Annotated[str, typer.Option(help="Who the token is for")] = "dev-user",
    department: Annotated[str | None, typer.Option()] = None,
    ttl: Annotated[int, typer.Option(min=1, help="Lifetime in seconds")] = 3600,
) -> None:
    """Issue a token for a person from the local dev issuer (dev mode only)."""
    from gateway.auth.humans import dev_issuer_key, issue_dev_token

    cfg = settings()
    if not cfg.dev_mode:
        console.print(line(("the dev issuer only works with ACCORD_DEV_MODE=true", "red")))
        raise typer.Exit(2)
    key = dev_issuer_key(cfg.resolved_key_dir)
    print(
        issue_dev_token(
            key,
            subject=sub,
            roles=role,
            audience=cfg.oidc_audience,
            department=department,
            ttl_s=ttl,
        )
    )


@token_app.command("request")
@handle_errors
def token_request(
    department: Annotated[str, typer.Option(help="Calling department id (iss)")],
    system: Annotated[str, typer.Option(help="Calling system id (sub)")],
    key: Annotated[Path, typer.Option(help="The system's private key (PEM)")],
    body: Annotated[Path | None, typer.Option(help="The exact request body file")] = None,
    method: Annotated[str, typer.Option()] = "POST",
    path: Annotated[str, typer.Option()] = "/v1/exchanges",
    ttl: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_LIFETIME_S,
            help=f"Lifetime in seconds, 1 to {MAX_LIFETIME_S} (the gateway refuses longer)",
        ),
    ] = 60,
    audience: Annotated[
        str | None,
        typer.Option(help="The gateway's id (token aud); default $ACCORD_GATEWAY_ID"),
    ] = None,
) -> None:
    """Sign a request token good for exactly one request (method, path and body)."""
    from gateway.auth.requests import sign_request_token
    from gateway.jose import load_private_key_pem

    print(
        sign_request_token(
            load_private_key_pem(key),
            department=department,
            system=system,
            # A department's shell needs no gateway configuration, only its id.
            audience=audience or os.environ.get("ACCORD_GATEWAY_ID") or "accord-gateway",
            method=method,
            path=path,
            body=read_file_bytes(body) if body is not None else b"",
            lifetime_s=ttl,
        )
    )


@app.command("serve")
@handle_errors
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    workers: Annotated[
        int, typer.Option(help="processes sharing the port (SO_REUSEPORT); one per core")
    ] = 1,
) -> None:
    """Run the gateway (configuration from ACCORD_* variables)."""
    from gateway.serving import serve as serve_app

    cfg = settings()  # fail early on bad configuration
    if workers > 1 and is_sqlite(cfg.resolved_database_url):
        err_console.print(
            line(
                ("warning", "yellow"),
                ": SQLite has one writer; several workers on one SQLite file take turns at it "
                "and answer slower, not faster. Use PostgreSQL (ACCORD_DATABASE_URL) for "
                "--workers > 1.",
            )
        )

    def prepare() -> None:
        """Migrate, create keys and the first policy once, before any worker starts."""
        services = open_services()
        try:
            services.policy.ensure_initial(cfg.policy_dir)
        finally:
            services.close()

    serve_app(
        "gateway.api.app:create_app",
        host=host,
        port=port,
        workers=workers,
        # With one worker too: a mistake found here is one line, where inside the
        # server's start-up it would be a traceback.
        prepare=prepare,
        max_connections=cfg.max_connections,
    )


@app.command("demo")
@handle_errors
def demo(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
) -> None:
    """Start the sample department systems, seed the demo, and serve the gateway."""
    os.environ.setdefault("ACCORD_DEV_MODE", "true")
    from examples.launch import launch
    from gateway.cli.demo_usage import usage_examples, write_python_example
    from gateway.demo import seed

    cfg = settings()
    # A stop request (SIGTERM: a service manager, `kill`) must stop the sample
    # department systems too. uvicorn shuts down on it, then raises it again for
    # the previous handler; as SystemExit it unwinds through `launch`, which stops
    # them, where the default action would end this process and orphan them.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with launch(data_dir=(cfg.data_dir / "departments").resolve()) as departments:
        os.environ.update(departments.env)
        services = open_services()
        try:
            summary = seed(services)
        finally:
            services.close()
        console.print_json(json.dumps(summary))
        base_url = f"http://{host}:{port}"
        console.print(line(("Accord demo", "green"), " on ", base_url, "  (API docs: /docs)"))
        example = write_python_example(cfg, base_url)
        console.print(value(usage_examples(cfg, base_url, example), multiline=True), soft_wrap=True)
        serve(host=host, port=port, workers=1)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@app.callback()
def _root() -> None:
    """Accord: a secure data-exchange gateway for government departments."""


if __name__ == "__main__":
    app()
