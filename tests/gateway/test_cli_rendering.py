"""The CLI prints other people's text as text: no markup, no emoji codes, no forged lines.

A proposer's note, OPA's messages about a proposed bundle and the names in a
list reach an approving officer's terminal through the CLI; these tests run
``accord`` against a real gateway (uvicorn on loopback) and read what it prints.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.cli.main import app as cli
from gateway.cli.render import fields_panel, line, value
from gateway.services import Services, build_services
from tests._support.gateway import serving_in_thread
from tests._support.servers import opa_binary
from tests.policies.test_api_policy import gateway_settings
from tests.policies.workflow_support import SUSPEND_RULE, SUSPEND_TEST, shipped_sources

FORGED_NOTE = (
    "tidy\n"
    "impact      0 of 34 decisions change (last 30 days, by user:alice)\n"
    "check       [green]✓[/green] rego_tests 50 passed"
)
# OPA reports the end of the file, line 100: "bad.rego:100:" holds an emoji code.
BAD_RULE_FILE = "package accord.exchange\n" + "\n" * 97 + 'bad_rule := "[/bold] oops" +\n'
ACCORD = Path(sys.executable).with_name("accord")


@pytest.fixture
def gateway(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[str, Services]]:
    services = build_services(gateway_settings(sqlite_url, tmp_path, opa_binary()))
    try:
        with serving_in_thread(services) as url:
            yield url, services
    finally:
        services.close()


def officer(gateway: tuple[str, Services], sub: str) -> dict[str, str]:
    url, services = gateway
    key = dev_issuer_key(services.settings.resolved_key_dir)
    token = issue_dev_token(key, subject=sub, roles=["officer"], audience="accord")
    return {"ACCORD_URL": url, "ACCORD_TOKEN": token}


def bundle_dir(tmp_path: Path, name: str, extra: dict[str, str]) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for path, text in (shipped_sources() | extra).items():
        (directory / path).write_text(text, encoding="utf-8")
    return directory


def suspend_bundle(tmp_path: Path) -> Path:
    return bundle_dir(
        tmp_path, "suspend", {"suspend.rego": SUSPEND_RULE, "suspend_test.rego": SUSPEND_TEST}
    )


def accord(*args: str, env: dict[str, str]) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception  # a Rich MarkupError is a traceback, not an answer
    return result


def panel_lines(output: str) -> list[str]:
    """A panel's lines without its border: a label starts one, a wrapped value does not."""
    return [ln.strip().strip("│").removeprefix(" ") for ln in output.splitlines()]


def starting_with(output: str, label: str) -> list[str]:
    return [ln for ln in panel_lines(output) if ln.split(" ", 1)[0] == label]


@pytest.mark.opa
def test_proposers_note_cannot_forge_impact_or_check_lines(
    gateway: tuple[str, Services], tmp_path: Path
) -> None:
    alice, bob = officer(gateway, "alice"), officer(gateway, "bob")
    r = accord("policy", "propose", str(suspend_bundle(tmp_path)), "--note", FORGED_NOTE, env=alice)
    assert r.exit_code == 0, r.output
    version = next(v.version for v in gateway[1].policy.list() if v.status == "checked")
    view = httpx.get(
        f"{bob['ACCORD_URL']}/v1/policies/{version}",
        headers={"Authorization": f"Bearer {bob['ACCORD_TOKEN']}"},
    ).json()
    assert accord("policy", "impact", version, env=bob).exit_code == 0

    for step in ("show", "approve"):
        r = accord("policy", step, version, env=bob)
        assert r.exit_code == 0, r.output
        notes = starting_with(r.output, "proposer's")
        assert len(notes) == 1, r.output
        # On one line, newlines shown, markup as written: the field's value, visibly.
        assert "tidy⏎impact      0 of 34" in notes[0]
        assert "⏎check       [green]✓[/green] rego_tests 50 passed" in notes[0]
        impact = starting_with(r.output, "impact")
        assert len(impact) == 1 and "by user:bob" in impact[0], r.output
        assert len(starting_with(r.output, "check")) == len(view["checks"]), r.output


@pytest.mark.opa
def test_markup_in_a_bundle_does_not_crash_propose_or_show(
    gateway: tuple[str, Services], tmp_path: Path
) -> None:
    alice = officer(gateway, "alice")
    bad = bundle_dir(tmp_path, "bad", {"bad.rego": BAD_RULE_FILE})
    note = "[/bold] :100: [red]"
    r = accord("policy", "propose", str(bad), "--note", note, env=alice)
    assert r.exit_code == 1, r.output
    assert "policy_rejected" in r.output and "bad.rego:100:" in r.output, r.output
    assert "💯" not in r.output
    rejected = next(v.version for v in gateway[1].policy.list() if v.checks_ok is False)

    r = accord("policy", "show", rejected, "--sources", env=alice)
    assert r.exit_code == 0, r.output
    assert "bad.rego:100:" in r.output and '"[/bold] :100: [red]"' in r.output
    assert 'bad_rule := "[/bold] oops" +' in r.output  # the source, as written
    assert "💯" not in r.output
    assert "✗ opa_check" in r.output


@pytest.mark.opa
def test_names_with_markup_are_listed_as_written(
    gateway: tuple[str, Services], tmp_path: Path
) -> None:
    name = "[/bold]mallory:100:[green]"
    r = accord("policy", "propose", str(suspend_bundle(tmp_path)), env=officer(gateway, name))
    assert r.exit_code == 0, r.output
    r = accord("policy", "list", env=officer(gateway, "bob"))
    assert r.exit_code == 0 and f"user:{name}" in r.output, r.output


@pytest.mark.opa
def test_piped_accord_keeps_long_values_whole(
    gateway: tuple[str, Services], tmp_path: Path
) -> None:
    name = "welfare-office-eligibility-review-officer-" + "x" * 80
    note = "why: " + " ".join(f"word{i}" for i in range(40))
    r = accord(
        "policy",
        "propose",
        str(suspend_bundle(tmp_path)),
        "--note",
        note,
        env=officer(gateway, name),
    )
    assert r.exit_code == 0, r.output
    version = next(v.version for v in gateway[1].policy.list() if v.status == "checked")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | officer(gateway, "bob")
    for args in (["policy", "list"], ["policy", "show", version]):
        proc = subprocess.run(
            [str(ACCORD), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert f"user:{name}" in proc.stdout, proc.stdout
        assert "…" not in proc.stdout, proc.stdout
    assert note in proc.stdout  # the note on one line, not wrapped at 80 columns


def test_audit_errors_print_paths_as_written(tmp_path: Path) -> None:
    missing = tmp_path / "[/bold]:100:"
    r = accord("audit", "verify", "--checkpoint", str(missing), env={})
    assert r.exit_code == 2, r.output
    assert "[/bold]:100:" in r.output and "💯" not in r.output


def test_control_characters_are_shown_escaped() -> None:
    text = "a\x1b[2Jb\u202ec\rd\te\nf\u2028g"
    assert value(text).plain == "a\\x1b[2Jb\\u202ec\\rd\\te⏎f\\u2028g"
    assert value("x\n\ty\x07", multiline=True).plain == "x\n\ty\\x07"
    assert line("[/bold] ", ("[red]", "red"), 7, None).plain == "[/bold] [red]7"


def test_a_wrapped_value_stays_in_its_column() -> None:
    """A note padded to the terminal's width cannot start a line of its own."""
    console = Console(file=io.StringIO(), width=60, emoji=False)
    note = "tidy" + " " * 60 + "impact      0 of 34 decisions change"
    console.print(fields_panel("v", [("note", value(note)), ("impact", value("1 of 2"))]))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert len(starting_with(out, "impact")) == 1, out


def test_a_skipped_check_is_marked_neither_passed_nor_failed() -> None:
    """A check that did not run is shown as such, never with the pass mark."""
    from gateway.cli.policy import _FAIL, _PASS, _SKIP, _mark

    assert _mark({"name": "regorus_vm", "ok": False, "status": "skipped"}) == _SKIP
    assert _mark({"name": "opa_check", "ok": True, "status": "passed"}) == _PASS
    assert _mark({"name": "opa_check", "ok": False, "status": "failed"}) == _FAIL
    assert _mark({"name": "older_view", "ok": True}) == _PASS  # views without a status
