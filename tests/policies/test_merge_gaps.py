"""The module merged for the OPA server means what OPA makes of the files one by one.

Two ways the merge used to change a bundle's meaning while the merged module
still compiled, both checked here against the real ``opa``:

- A ``# METADATA`` block above a file's ``package`` line is the package's
  annotation (default scope ``package``); merged, it sat above that file's
  first rule and became the rule's (scope ``rule``), which
  ``rego.metadata.chain()`` and every tool reading annotations see. It now goes
  above the merged package line; two files annotating one package are refused,
  as OPA refuses them.
- OPA scopes an import to its file: an alias in one file leaves a name in
  another file (a rule, a variable) alone. Merged, every file sees every
  import, so that name silently became the import. Such a bundle is refused
  when proposed, with a detail naming the files and the alias.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ValidationFailed
from gateway.policy.checks import PolicyRejected, check_bundle
from gateway.policy.opa import merge_modules
from tests.policies.conftest import POLICY_DIR
from tests.policies.workflow_support import bundle_with, policy_store

pytestmark = pytest.mark.opa

INPUT = {"request": {"purpose": "audit"}, "agreement": {"id": "agr-1"}}


def opa_eval(opa_bin: Path, files: dict[str, str], tmp: Path, query: str) -> Any:
    """``query`` evaluated by the real ``opa`` over ``files``, each its own module."""
    tmp.mkdir()
    for name, text in files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    (tmp.parent / f"{tmp.name}.input.json").write_text(json.dumps(INPUT), encoding="utf-8")
    proc = subprocess.run(
        [
            str(opa_bin),
            "eval",
            "--format=json",
            "--data",
            str(tmp),
            "--input",
            str(tmp.parent / f"{tmp.name}.input.json"),
            query,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]


def merged_eval(opa_bin: Path, files: dict[str, str], tmp: Path, query: str) -> Any:
    merged = {f"m{i}.rego": text for i, text in enumerate(merge_modules(files).values())}
    return opa_eval(opa_bin, merged, tmp, query)


# -- gap A: a package annotation ---------------------------------------------

ANNOTATED = (
    "# Gates of the exchange.\n\n"
    "# METADATA\n# title: Exchange gates\n# description: who may pass\n"
    "package gates\n\n"
    "chain := rego.metadata.chain()\n"
)
#: Sorted before the annotated file, so its rules come first in the merged module.
OTHER = (
    "package gates\n\n# METADATA\n# title: The audit gate\n"
    'audit if input.request.purpose == "audit"\n'
)


@pytest.mark.parametrize(
    "scope", ["", "# scope: package\n", "# scope: subpackages\n"], ids=["default", "package", "sub"]
)
def test_package_annotation_stays_on_the_package(opa_bin: Path, tmp_path: Path, scope: str) -> None:
    files = {
        "b_gates.rego": ANNOTATED.replace("# title:", scope + "# title:"),
        "a_gates.rego": OTHER,
    }
    alone = opa_eval(opa_bin, files, tmp_path / "files", "data.gates.chain")
    assert alone[-1]["path"] == ["gates"]  # OPA: the package's annotation
    assert alone[-1]["annotations"]["title"] == "Exchange gates"
    assert alone[-1]["annotations"]["scope"] == (
        scope.removeprefix("# scope: ").strip() or "package"
    )
    assert merged_eval(opa_bin, files, tmp_path / "merged", "data.gates") == opa_eval(
        opa_bin, files, tmp_path / "again", "data.gates"
    )


def test_annotated_package_passes_the_checks(opa_bin: Path) -> None:
    """The bundle the merge once broke (the OPA server refused a package-scoped
    annotation left on a rule) or silently changed now passes as written."""
    annotated = (
        "# METADATA\n# scope: package\n# title: Exchange gates\npackage accord.exchange\n\n"
        'audit_gated if input.request.purpose == "audit"\n'
    )
    for text in (annotated, annotated.replace("# scope: package\n", "")):
        report = check_bundle(bundle_with({"gates.rego": text}), opa_bin)
        assert {c.name: c.outcome for c in report.checks}["opa_check"] == "passed", report.to_json()


def test_package_annotated_in_two_files_is_refused_as_opa_refuses_it(
    opa_bin: Path, tmp_path: Path
) -> None:
    files = {"a.rego": ANNOTATED, "b.rego": ANNOTATED.replace("chain :=", "other :=")}
    with pytest.raises(subprocess.CalledProcessError) as opa:
        opa_eval(opa_bin, files, tmp_path / "files", "data.gates")
    assert "package annotation redeclared" in opa.value.stdout
    with pytest.raises(ValidationFailed) as err:
        merge_modules(files)
    assert err.value.detail.startswith("b.rego: a METADATA block above the package line")
    assert "a.rego" in err.value.detail


# -- gap B: an import alias that is a name in another file ---------------------

IMPORTS = 'package gates\n\nimport input.request as req\n\ngated if req.purpose == "audit"\n'
#: ``req`` in a file without the import: OPA reads it as that file's own name.
SHADOWED = {
    "rule": 'package gates\n\nreq := {"purpose": "other"}\n\nown if req.purpose == "other"\n',
    "variable": 'package gates\n\nown if {\n\treq = input.agreement.id\n\treq == "agr-1"\n}\n',
    "function": "package gates\n\nreq(x) := x\n\nown if req(1) == 1\n",
}


@pytest.mark.parametrize("kind", sorted(SHADOWED))
def test_import_alias_named_in_another_file_is_refused(
    opa_bin: Path, tmp_path: Path, kind: str
) -> None:
    files = {"a.rego": IMPORTS, "b.rego": SHADOWED[kind]}
    # OPA on the files: each file's `req` is its own, and both rules hold.
    assert opa_eval(opa_bin, files, tmp_path / "files", "data.gates.own") is True
    assert opa_eval(opa_bin, files, tmp_path / "again", "data.gates.gated") is True
    with pytest.raises(ValidationFailed) as err:
        merge_modules(files)
    assert err.value.detail.startswith("a.rego: import alias 'req' is also a name in b.rego")
    assert "input.request" in err.value.detail


def test_import_alias_over_two_lines_is_read_as_opa_reads_it(opa_bin: Path, tmp_path: Path) -> None:
    """OPA reads ``import input.request`` and ``as req`` on the next line as one
    import: its alias is ``req``, not ``request``."""
    files = {
        "a.rego": IMPORTS.replace("input.request as req", "input.request\n\tas req"),
        "b.rego": SHADOWED["rule"],
    }
    assert opa_eval(opa_bin, files, tmp_path / "files", "data.gates.gated") is True
    with pytest.raises(ValidationFailed) as err:
        merge_modules(files)
    assert err.value.detail.startswith("a.rego: import alias 'req' is also a name in b.rego")


def test_names_the_alias_leaves_alone_still_merge(opa_bin: Path, tmp_path: Path) -> None:
    """Refs, strings, comments and the same import in the other file are no clash,
    and the merged module decides as the files do."""
    files = {
        "a.rego": IMPORTS,
        "b.rego": (
            "package gates\n\nimport input.request as req\n\n# req\n"
            'steps := [input.req, {"req": 1}, `req`]\nown := req.purpose\n'
        ),
        "c.rego": "package gates\n\nimport rego.v1\n\nv1 := 1\n",
    }
    assert merged_eval(opa_bin, files, tmp_path / "merged", "data.gates") == opa_eval(
        opa_bin, files, tmp_path / "files", "data.gates"
    )


def test_bundle_with_a_leaking_alias_is_rejected_when_proposed(
    sqlite_url: str, opa_bin: Path
) -> None:
    bundle = bundle_with(
        {
            "purpose_gate.rego": (
                "package accord.exchange\n\nimport input.request as req\n\n"
                'purpose_gated if req.purpose == "audit"\n'
            ),
            "req_rule.rego": 'package accord.exchange\n\nreq := {"purpose": "other"}\n',
        }
    )
    with policy_store(sqlite_url, opa_bin) as (service, _, _):
        shipped = service.ensure_initial(POLICY_DIR)
        with pytest.raises(PolicyRejected) as err:
            service.propose(bundle, actor="user:alice")
        checks = {c["name"]: c for c in err.value.extra["checks"]}
        assert checks["opa_check"]["status"] == "failed"
        assert checks["opa_check"]["detail"].startswith(
            "cannot be merged for the OPA server: purpose_gate.rego: import alias 'req'"
            " is also a name in req_rule.rego"
        )
        assert service.get(bundle.version).status == "rejected"
        assert service.active_version() == shipped
