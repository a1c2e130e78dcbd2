"""The proposal checks pass only what the OPA server can be given: the package
declaration is read as OPA reads it, and a bundle the merge for the server
cannot handle is rejected when proposed, never activated into a 503."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ValidationFailed
from gateway.policy.bundle import PolicyBundle
from gateway.policy.checks import PolicyRejected, check_bundle
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.opa import OpaEngine, merge_modules, policy_id
from tests.policies.conftest import POLICY_DIR
from tests.policies.harness import LoopThread, base_input
from tests.policies.workflow_support import bundle_with, policy_store, shipped_sources

pytestmark = pytest.mark.opa

DECLARATION = "\npackage accord.exchange\n"
#: Package declarations OPA accepts for the shipped package.
DECLARATIONS = {
    "trailing_comment": "\npackage accord.exchange # main\n",
    "whitespace_and_tab_comment": "\npackage \t accord.exchange\t\t# main  \n",
    "string_step": '\npackage accord["exchange"]\n',
    "split_over_lines": "\npackage # the exchange policy\n\taccord.exchange\n",
    "import_on_the_same_line": "\npackage accord.exchange import data.accord.validation\n",
    # The package's annotation, which the merge puts above the merged package line.
    "package_annotation": "\n# METADATA\n# title: Exchange decisions\npackage accord.exchange\n",
}


def declared(form: str) -> PolicyBundle:
    shipped = shipped_sources()["exchange.rego"]
    assert shipped.count(DECLARATION) == 1
    return bundle_with(exchange_rego=shipped.replace(DECLARATION, DECLARATIONS[form]))


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    running = LoopThread()
    yield running
    running.close()


def test_package_line_with_trailing_comment_passes_the_checks(opa_bin: Path) -> None:
    report = check_bundle(declared("trailing_comment"), opa_bin)
    assert report.ok, report.to_json()


@pytest.mark.parametrize("form", sorted(DECLARATIONS))
def test_package_declaration_merges_and_loads_into_a_real_opa_server(
    scratch_opa_url: str, loop: LoopThread, form: str
) -> None:
    bundle = declared(form)
    assert "accord.exchange" in merge_modules(bundle.policy_sources())
    opa = loop.run(OpaEngine.connect(scratch_opa_url, timeout_ms=5000))
    embedded = EmbeddedEngine(timeout_ms=5000)
    try:
        loop.run(opa.load(bundle))
        loop.run(embedded.load(bundle))
        assert loop.run(opa.health()).ok
        decided = loop.run(opa.decide(base_input()))
        assert not decided.is_error, decided
        assert decided == loop.run(embedded.decide(base_input()))
    finally:
        loop.run(opa.close())
        loop.run(embedded.close())


#: Bundles each file of which OPA compiles, but which the merge cannot push.
UNMERGEABLE = {
    # One alias, two targets, in two files of one package.
    "import_clash": (
        {
            "purpose_gate.rego": (
                "package accord.exchange\n\nimport input.request as req\n\n"
                'purpose_gated if req.purpose == "audit"\n'
            ),
            "agreement_gate.rego": (
                "package accord.exchange\n\nimport input.agreement as req\n\n"
                'agreement_gated if req.id == "agr-0"\n'
            ),
        },
        "purpose_gate.rego: import 'req' clashes with another file",
    ),
    # A path segment that cannot be part of an OPA policy id (a URL path).
    "unnameable_package": (
        {"odd.rego": 'package accord["odd one"]\n\nflag := true\n'},
        "odd.rego: package path segment 'odd one' cannot name an OPA policy",
    ),
}


@pytest.mark.parametrize("kind", sorted(UNMERGEABLE))
def test_bundle_the_merge_cannot_handle_is_rejected_when_proposed(
    sqlite_url: str, opa_bin: Path, kind: str
) -> None:
    files, named = UNMERGEABLE[kind]
    bundle = bundle_with(files)
    with pytest.raises(ValidationFailed):
        merge_modules(bundle.policy_sources())  # what activation would run into
    with policy_store(sqlite_url, opa_bin) as (service, _, _):
        shipped = service.ensure_initial(POLICY_DIR)
        with pytest.raises(PolicyRejected) as err:
            service.propose(bundle, actor="user:alice")
        checks = {c["name"]: c for c in err.value.extra["checks"]}
        assert checks["opa_check"]["status"] == "failed"
        assert checks["opa_check"]["detail"].startswith(
            f"cannot be merged for the OPA server: {named}"
        )
        assert service.get(bundle.version).status == "rejected"
        assert service.active_version() == shipped


def test_merge_reads_imports_and_raw_strings_as_opa_does() -> None:
    merged = merge_modules(
        {
            "a.rego": "package p # first\nimport data.lib # the library\n\nx := lib.v\n",
            "b.rego": "package p\nimport  data.lib\n\ny := `\nimport data.other\n`\n",
        }
    )
    assert list(merged) == ["p"]
    text = merged["p"]
    assert text.count("import data.lib") == 1  # one import, its comment is no clash
    assert "\nimport data.other\n`" in text  # a raw string's line is data, left in place
    assert policy_id("p") == "accord/p"
    assert policy_id('accord["x-y"].z') == "accord/accord/x-y/z"
