"""``accord dept``: register departments, their systems and keys (operator side)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gateway.cli.common import console, handle_errors, load_json_file, open_services
from gateway.cli.render import line, row
from gateway.registry.models import DepartmentCreate, KeyCreate, SystemCreate, SystemUpdate

dept_app = typer.Typer(help="Manage departments, systems and keys.", no_args_is_help=True)
ACTOR = "cli:operator"


@dept_app.command("register")
@handle_errors
def register(
    dept_id: str,
    name: Annotated[str, typer.Option(help="Full name")],
    clearance: Annotated[str, typer.Option(help="A level of the classification scheme")],
    caveat: Annotated[list[str] | None, typer.Option(help="Caveat held (repeatable)")] = None,
    contact: Annotated[str, typer.Option()] = "",
) -> None:
    """Register a department."""
    services = open_services()
    dept = services.registry.register_department(
        DepartmentCreate(
            id=dept_id, name=name, clearance=clearance, caveats=caveat or [], contact=contact
        ),
        actor=ACTOR,
    )
    console.print(
        line("registered ", (dept.id, "bold"), " (", dept.name, "), clearance ", dept.clearance)
    )


@dept_app.command("add-system")
@handle_errors
def add_system(
    dept_id: str,
    system_id: str,
    name: Annotated[str, typer.Option()] = "",
    capability: Annotated[list[str] | None, typer.Option(help="e.g. citizen_portal")] = None,
) -> None:
    """Register a system of a department (the `sub` of its request tokens)."""
    services = open_services()
    services.registry.add_system(
        dept_id,
        SystemCreate(system_id=system_id, name=name, capabilities=capability or []),
        actor=ACTOR,
    )
    console.print(line("registered system ", (system_id, "bold"), " of ", dept_id))


@dept_app.command("add-key")
@handle_errors
def add_key(
    dept_id: str,
    jwk_file: Annotated[Path, typer.Argument(help="Public JWK (JSON) file")],
    not_before: Annotated[datetime | None, typer.Option()] = None,
    not_after: Annotated[datetime | None, typer.Option()] = None,
    system: Annotated[
        str | None, typer.Option(help="Bind the key to this system: it signs only for it")
    ] = None,
) -> None:
    """Add a public key to a department (several keys may be live at once).

    A system with capabilities (a citizen portal) accepts only keys bound to it.
    """
    services = open_services()
    key = services.registry.add_key(
        dept_id,
        KeyCreate(
            jwk=load_json_file(jwk_file), not_before=not_before, not_after=not_after, system=system
        ),
        actor=ACTOR,
    )
    bound = ("", "") if system is None else (" for system ", system)
    console.print(line("added key ", (key.kid, "bold"), " (", key.alg, ") to ", dept_id, *bound))


@dept_app.command("suspend")
@handle_errors
def suspend(
    dept_id: str, reason: Annotated[str, typer.Option(help="Why it is suspended (audited)")]
) -> None:
    """Suspend a department: none of its keys authenticates an exchange until reinstated."""
    services = open_services()
    services.registry.set_department_status(dept_id, "suspended", reason, actor=ACTOR)
    console.print(line("suspended ", (dept_id, "bold")))


@dept_app.command("reinstate")
@handle_errors
def reinstate(
    dept_id: str, reason: Annotated[str, typer.Option(help="Why it is reinstated (audited)")]
) -> None:
    """Reinstate a suspended department."""
    services = open_services()
    services.registry.set_department_status(dept_id, "active", reason, actor=ACTOR)
    console.print(line("reinstated ", (dept_id, "bold")))


@dept_app.command("disable-system")
@handle_errors
def disable_system(dept_id: str, system_id: str) -> None:
    """Disable a system: its request tokens are refused, whichever key signed them."""
    services = open_services()
    services.registry.set_system_status(dept_id, system_id, "disabled", actor=ACTOR)
    console.print(line("disabled system ", (system_id, "bold"), " of ", dept_id))


@dept_app.command("enable-system")
@handle_errors
def enable_system(dept_id: str, system_id: str) -> None:
    """Enable a disabled system again."""
    services = open_services()
    services.registry.set_system_status(dept_id, system_id, "active", actor=ACTOR)
    console.print(line("enabled system ", (system_id, "bold"), " of ", dept_id))


@dept_app.command("set-capabilities")
@handle_errors
def set_capabilities(
    dept_id: str,
    system_id: str,
    capability: Annotated[
        list[str] | None, typer.Option(help="e.g. citizen_portal (repeatable; none: clear)")
    ] = None,
) -> None:
    """Replace a system's capabilities."""
    services = open_services()
    system = services.registry.update_system(
        dept_id, system_id, SystemUpdate(capabilities=capability or []), actor=ACTOR
    )
    shown = ",".join(system.capabilities) or "(none)"
    console.print(line("system ", (system_id, "bold"), " of ", dept_id, " now has ", shown))


@dept_app.command("revoke-key")
@handle_errors
def revoke_key(
    kid: str, reason: Annotated[str, typer.Option(help="Why the key is revoked")]
) -> None:
    """Revoke a key: it verifies nothing from now on.

    A key id is a JWK thumbprint and may start with "-": give it after "--"
    (accord dept revoke-key --reason compromised -- KID).
    """
    services = open_services()
    key = services.registry.revoke_key(kid, reason, actor=ACTOR)
    console.print(line("revoked key ", (key.kid, "bold"), " of ", key.department_id))


@dept_app.command("bind-key")
@handle_errors
def bind_key(
    dept_id: str,
    kid: str,
    system: Annotated[str, typer.Option(help="The system the key is to sign for, and only it")],
) -> None:
    """Bind a registered key to one system of its department (one-way).

    A system with capabilities (a citizen portal) accepts only a key bound to it:
    a key only that system holds can be bound rather than replaced. A key id may
    start with "-": give it after "--" (accord dept bind-key D --system S -- KID).
    """
    services = open_services()
    key = services.registry.bind_key(dept_id, kid, system, actor=ACTOR)
    console.print(line("bound key ", (key.kid, "bold"), " of ", dept_id, " to system ", system))


@dept_app.command("list")
@handle_errors
def list_departments(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered departments."""
    services = open_services()
    depts = services.registry.list_departments()
    if as_json:
        print(json.dumps([d.model_dump(mode="json") for d in depts], indent=2))
        return
    table = Table("id", "name", "clearance", "caveats", "status", "keys")
    for d in depts:
        keys = services.registry.list_keys(d.id)
        row(table, d.id, d.name, d.clearance, ",".join(d.caveats), d.status, len(keys))
    console.print(table)
