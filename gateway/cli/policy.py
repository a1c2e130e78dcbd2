"""``accord policy``: the security officers' workflow from a terminal, over the HTTP API.

The CLI talks to a running gateway with the officer's own bearer token
(``--token`` / ``ACCORD_TOKEN``; ``accord token issue --role officer`` in dev
mode) rather than to the database: four-eyes approval is only worth something
if the gateway, not the person at the keyboard, says who proposed and who
approved. ``--url`` / ``ACCORD_URL`` names the gateway (default
http://127.0.0.1:8080).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table
from rich.text import Text

from gateway.cli.common import console, err_console, handle_errors
from gateway.cli.render import fields_panel, line, row, rule, value
from gateway.policy.bundle import PolicyBundle

__all__ = ["policy_app"]

policy_app = typer.Typer(
    help="Policy versions: propose, check, dry-run, approve, activate, roll back.",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class _Api:
    url: str
    token: str
    timeout: float

    def call(self, method: str, path: str, body: Any = None) -> Any:
        if not self.token:
            err_console.print(line(_ERROR, " no token: pass --token or set ACCORD_TOKEN"))
            raise typer.Exit(2)
        try:
            resp = httpx.request(
                method,
                self.url.rstrip("/") + path,
                json=body,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            err_console.print(line(_ERROR, " cannot reach ", self.url, ": ", str(exc)))
            raise typer.Exit(1) from exc
        if resp.status_code >= 400:
            _print_problem(resp)
            raise typer.Exit(1)
        return resp.json()


_ERROR = ("error", "red")
_PASS = ("✓", "green")
_FAIL = ("✗", "red")
_SKIP = ("–", "yellow")


def _mark(check: dict[str, Any]) -> tuple[str, str]:
    """A check's mark: passed, failed, or skipped (it did not run: never a pass)."""
    if check.get("status") == "skipped":
        return _SKIP
    return _PASS if check.get("ok") else _FAIL


def _print_problem(resp: httpx.Response) -> None:
    try:
        doc = resp.json()
    except ValueError:
        err_console.print(line(_ERROR, f" HTTP {resp.status_code}: ", resp.text[:500]))
        return
    if not isinstance(doc, dict):
        err_console.print(line(_ERROR, f" HTTP {resp.status_code}: ", json.dumps(doc)[:500]))
        return
    code = doc.get("code", resp.status_code)
    err_console.print(line(_ERROR, " ", (code, "bold"), ": ", doc.get("detail")))
    for check in doc.get("checks", []):
        if not check.get("ok"):
            mark = _mark(check)
            err_console.print(line("  ", mark, " ", check.get("name"), ": ", check.get("detail")))
    if doc.get("version"):
        err_console.print(line("  version ", doc["version"]))
    if doc.get("code") == "policy_base_stale":  # what it was approved against, what is active
        err_console.print(line("  base    ", doc.get("base_version") or "(none)"))
        err_console.print(line("  active  ", doc.get("active_version") or "(none)"))


@policy_app.callback()
def _connect(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="ACCORD_URL", help="Gateway base URL")] = (
        "http://127.0.0.1:8080"
    ),
    token: Annotated[
        str, typer.Option(envvar="ACCORD_TOKEN", help="Officer's bearer token", show_default=False)
    ] = "",
    timeout: Annotated[float, typer.Option(help="Seconds per request")] = 120.0,
) -> None:
    ctx.obj = _Api(url, token, timeout)


def _api(ctx: typer.Context) -> _Api:
    api: _Api = ctx.obj
    return api


def _short(version: str | None) -> str:
    return version.removeprefix("sha256:")[:16] if version else "-"


def _status(view: dict[str, Any]) -> Text:
    colour = {"active": "green", "rejected": "red", "approved": "cyan", "checked": "blue"}
    text = view["status"]
    return value(text, colour.get(text, "white"))


def _print_version(view: dict[str, Any]) -> None:
    """The version's fields, each value beside its label and on its own line.

    The note and the check output are other people's text: shown as values,
    with their newlines as ``⏎``, they cannot pass for a check or impact line.
    """
    fields = [
        ("version", value(view["version"])),
        ("status", line(_status(view), "  (active)" if view.get("active") else "")),
        ("proposed", line(view["proposer"], " at ", view["proposed_at"])),
        ("base", value(view.get("base_version") or "-")),
        ("files", value(", ".join(view.get("files", [])))),
    ]
    if view.get("note"):
        fields.append(
            ("proposer's note", line(('"', "dim"), (view["note"], "italic"), ('"', "dim")))
        )
    if view.get("approver"):
        fields.append(("approved", line(view["approver"], " at ", view["approved_at"])))
    if view.get("rejected_by"):
        fields.append(("rejected", line(view["rejected_by"], " at ", view["rejected_at"])))
    if view.get("checks_pending"):
        fields.append(("checks", value(view["checks_pending"], "yellow")))
    for check in view.get("checks", []):
        detail = check.get("detail") or ""
        mark = _mark(check)
        fields.append(("check", line(mark, " ", check.get("name"), " " if detail else "", detail)))
    if view.get("impact"):
        impact = view["impact"]
        fields.append(
            (
                "impact",
                line(
                    f"{impact.get('changed')} of {impact.get('replayed')} decisions change "
                    f"(last {impact.get('days')} days, by ",
                    impact.get("assessed_by"),
                    ")",
                ),
            )
        )
    console.print(fields_panel("policy version", fields))


@policy_app.command("propose")
@handle_errors
def propose(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Bundle directory (*.rego, tests included)")],
    note: Annotated[str, typer.Option(help="Why this change")] = "",
) -> None:
    """Upload a bundle as a new version; the automatic checks run at once."""
    bundle = PolicyBundle.from_directory(directory)
    console.print(line("proposing ", bundle.version, f" ({len(bundle.files)} files)"))
    view = _api(ctx).call("POST", "/v1/policies", {"files": bundle.sources(), "note": note})
    _print_version(view)


@policy_app.command("list")
def list_versions(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only versions in this state")] = None,
) -> None:
    """Every version, newest first."""
    views = _api(ctx).call("GET", "/v1/policies" + (f"?status={status}" if status else ""))
    table = Table("version", "status", "proposer", "approver", "proposed", "checks")
    for v in views:
        checks = {None: value("-"), True: value("pass", "green"), False: value("fail", "red")}
        row(
            table,
            _short(v["version"]) + (" *" if v["active"] else ""),
            _status(v),
            v["proposer"],
            v.get("approver") or "-",
            v["proposed_at"][:19],
            checks[v["checks_ok"]],
        )
    console.print(table)


@policy_app.command("show")
def show(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="sha256:<hex>, or a prefix of 8+ hex digits")],
    sources: Annotated[bool, typer.Option(help="Print the Rego files too")] = False,
) -> None:
    """One version: state, who did what, check results, last impact summary."""
    view = _api(ctx).call("GET", f"/v1/policies/{version}")
    _print_version(view)
    if sources:
        for path, text in view["sources"].items():
            rule(console, path)
            console.print(value(text, multiline=True))


@policy_app.command("impact")
def impact(
    ctx: typer.Context,
    version: str,
    days: Annotated[int, typer.Option(help="Replay the decisions of the last N days")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Dry-run: which recorded decisions this version would change, by agreement and reason."""
    report = _api(ctx).call("POST", f"/v1/policies/{version}/impact", {"days": days})
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console.print(
        line(
            report["version"],
            " vs active ",
            report["baseline"] or "(none)",
            ": ",
            (report["changed"], "bold"),
            f" of {report['replayed']} decisions in the last {report['days']} days change "
            f"({report['allow_to_deny']} allow→deny, {report['deny_to_allow']} deny→allow, "
            f"{report['errors']} policy errors)",
            (" (truncated)", "yellow") if report["truncated"] else "",
        )
    )
    table = Table("agreement", "change", "reasons +", "reasons −", "fields", "count", "e.g.")
    for g in report["groups"]:
        row(
            table,
            g["agreement"],
            g["change"],
            ", ".join(g["reasons_added"]),
            ", ".join(g["reasons_removed"]),
            ", ".join(g["fields_changed"]),
            str(g["count"]),
            ", ".join(g["exchanges"][:3]),
        )
    if report["groups"]:
        console.print(table)


@policy_app.command("approve")
def approve(ctx: typer.Context, version: str) -> None:
    """Approve a checked version (a different officer than its proposer; only while its base
    version is active)."""
    _print_version(_api(ctx).call("POST", f"/v1/policies/{version}/approve"))


@policy_app.command("reject")
def reject(
    ctx: typer.Context, version: str, reason: Annotated[str, typer.Option(help="Why")]
) -> None:
    """Turn down a version that is not active."""
    _print_version(_api(ctx).call("POST", f"/v1/policies/{version}/reject", {"reason": reason}))


@policy_app.command("activate")
def activate(ctx: typer.Context, version: str) -> None:
    """Make an approved version active on every node (only while its base version is)."""
    _print_version(_api(ctx).call("POST", f"/v1/policies/{version}/activate"))


@policy_app.command("rollback")
def rollback(ctx: typer.Context) -> None:
    """Return to the version that was active before the current one."""
    view = _api(ctx).call("POST", "/v1/policies/rollback")
    console.print(line(("rolled back", "green"), ": ", view["version"], " is active again"))


@policy_app.command("history")
def history(ctx: typer.Context) -> None:
    """Activations and rollbacks, newest first."""
    table = Table("#", "action", "version", "rollback to", "actor", "at")
    for h in _api(ctx).call("GET", "/v1/policies/history"):
        row(
            table,
            str(h["id"]),
            h["action"],
            _short(h["version"]),
            _short(h["rollback_to"]),
            h["actor"],
            h["at"][:19],
        )
    console.print(table)
