"""A connector config holding a key Accord does not read is refused, naming the key.

Before, ``retries: {atempts: 1}`` or ``tls: {ca_fle: ...}`` was accepted and the
key ignored, so the default stayed in force while the integrator believed the
setting was. Now the key is refused where a binding is written
(``check_config``) and where a config file is built (``build_connector``),
naming its place (``retries.atempts``) and the closest key there is. Every
config in ``examples/`` and every connector config block in ``docs/`` must
still pass, so the docs, the examples and the code cannot drift apart.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.config import KINDS, build_connector, check_config, load_config
from connectors.interface import Connector, ConnectorConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: The example config of each kind, and its entity.
EXAMPLE = {
    "rest": ("civil_registry", "citizen"),
    "sql": ("health_insurer", "member_cover"),
    "soap": ("tax_authority", "tax_status"),
    "csv": ("welfare_office", "claim"),
}

Change = Callable[[dict[str, Any], str], None]


def _set(*path: str, value: Any = 1) -> Change:
    """Put ``value`` at ``path`` (``"@"`` is the example's entity), making sections on the way."""

    def change(config: dict[str, Any], entity: str) -> None:
        node = config
        for part in path[:-1]:
            node = node.setdefault(entity if part == "@" else part, {})
        node[path[-1]] = value

    return change


def _rename(*path: str, to: str) -> Change:
    def change(config: dict[str, Any], entity: str) -> None:
        node = config
        for part in path[:-1]:
            node = node[entity if part == "@" else part]
        node[to] = node.pop(path[-1])

    return change


#: (kind, change, the place the refusal must name, the hint it must give)
MISSPELT: dict[str, tuple[str, Change, str, str]] = {
    "rest_top": ("rest", _rename("timeouts", to="timeoutz"), "'timeoutz'", "'timeouts'"),
    "rest_retries": (
        "rest",
        _rename("retries", "attempts", to="atempts"),
        "'retries.atempts'",
        "'attempts'",
    ),
    "rest_tls": (
        "rest",
        _set("tls", "ca_fle", value="${CIVIL_REGISTRY_CA}"),
        "'tls.ca_fle'",
        "'ca_file'",
    ),
    "rest_auth": ("rest", _rename("auth", "token", to="toekn"), "'auth.toekn'", "'token'"),
    "rest_entity": (
        "rest",
        _set("entities", "@", "key_feild", value="ssn"),
        "'entities.citizen.key_feild'",
        "key_pattern",
    ),
    "sql_top": ("sql", _set("max_row", value=10), "'max_row'", "'max_rows'"),
    "sql_breaker": ("sql", _set("breaker", "failurs", value=3), "'breaker.failurs'", "'failures'"),
    "sql_entity": (
        "sql",
        _rename("entities", "@", "table", to="tabel"),
        "'entities.member_cover.tabel'",
        "'table'",
    ),
    "soap_top": (
        "soap",
        _rename("ping_operation", to="ping_operaton"),
        "'ping_operaton'",
        "'ping_operation'",
    ),
    "soap_timeouts": (
        "soap",
        _rename("timeouts", "total", to="totl"),
        "'timeouts.totl'",
        "'total'",
    ),
    "soap_entity": (
        "soap",
        _set("entities", "@", "idempotnt", value=False),
        "'entities.tax_status.idempotnt'",
        "'idempotent'",
    ),
    "csv_top": ("csv", _set("directry", value="/drop"), "'directry'", "'directory'"),
    "csv_retries": (
        "csv",
        _set("retries", "max_wiat", value=1.0),
        "'retries.max_wiat'",
        "'max_wait'",
    ),
    "csv_entity": (
        "csv",
        _rename("entities", "@", "delimiter", to="delimter"),
        "'entities.claim.delimter'",
        "'delimiter'",
    ),
    "soap_takes_no_auth": (
        "soap",
        _set("auth", value={"token": "x"}),
        "'auth'",
        "only rest connectors",
    ),
    "rest_takes_no_table": (
        "rest",
        _set("entities", "@", "table", value="T"),
        "'entities.citizen.table'",
        "only sql connectors",
    ),
    "sql_takes_no_tls": (
        "sql",
        _set("tls", value={"ca_file": "x"}),
        "'tls'",
        "only rest and soap connectors",
    ),
    "capitalised": (
        "csv",
        _rename("max_response_bytes", to="Max_Response_Bytes"),
        "'Max_Response_Bytes'",
        "'max_response_bytes'",
    ),
}


def stored(kind: str) -> dict[str, Any]:
    """The example config of ``kind`` as a binding stores it: placeholders as written."""
    folder, _ = EXAMPLE[kind]
    config: dict[str, Any] = yaml.safe_load((EXAMPLES / folder / "connector.yaml").read_text())
    if kind == "soap":
        config["wsdl"] = str(EXAMPLES / folder / config["wsdl"])
    return config


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Values for the examples' placeholders: building opens nothing, so none need serve."""
    return {
        "CIVIL_REGISTRY_TOKEN": "token",
        "HEALTH_INSURER_DB_URL": f"sqlite:///{tmp_path / 'insurer.db'}",
        "WELFARE_OFFICE_DROP_DIR": str(tmp_path),
    }


def loaded(kind: str, env: dict[str, str]) -> dict[str, Any]:
    """The example config of ``kind`` as read from its file: placeholders filled."""
    folder, _ = EXAMPLE[kind]
    return load_config(EXAMPLES / folder / "connector.yaml", env)


def built(config: dict[str, Any]) -> None:
    connector: Connector = build_connector(config)
    asyncio.run(connector.aclose())


def _refusal(check: Callable[[], object]) -> str:
    with pytest.raises(ConnectorConfigError) as err:
        check()
    assert err.value.code == "connector_config_invalid"
    return err.value.detail


@pytest.mark.parametrize("case", sorted(MISSPELT))
def test_a_misspelt_key_is_refused_when_a_binding_is_written(case: str) -> None:
    kind, change, place, hint = MISSPELT[case]
    config = stored(kind)
    change(config, EXAMPLE[kind][1])
    detail = _refusal(lambda: check_config(config))
    assert f"unknown key {place}" in detail and hint in detail, detail


@pytest.mark.parametrize("case", sorted(MISSPELT))
def test_a_misspelt_key_is_refused_when_a_config_file_is_built(
    case: str, env: dict[str, str]
) -> None:
    kind, change, place, hint = MISSPELT[case]
    config = loaded(kind, env)
    change(config, EXAMPLE[kind][1])
    detail = _refusal(lambda: build_connector(config))
    assert f"unknown key {place}" in detail and hint in detail, detail


def test_a_misspelt_key_in_a_file_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    text = (EXAMPLES / "welfare_office" / "connector.yaml").read_text()
    path = tmp_path / "connector.yaml"
    path.write_text(text + "retries: {atempts: 1}\n")
    config = load_config(path, env)
    assert "unknown key 'retries.atempts'" in _refusal(lambda: build_connector(config))


def test_a_misspelt_key_is_refused_when_the_wsdl_is_a_placeholder() -> None:
    """Without a WSDL on the gateway's disk the SOAP connector is not built when the
    binding is written; its keys are checked all the same."""
    config = stored("soap")
    config["wsdl"] = "${TAX_AUTHORITY_WSDL}"
    assert "tax_status" in check_config(config)
    config["retries"]["atempts"] = config["retries"].pop("attempts")
    assert "unknown key 'retries.atempts'" in _refusal(lambda: check_config(config))


def test_every_unknown_key_is_named_at_once() -> None:
    config = stored("rest")
    config["retries"]["atempts"] = 1
    config["tls"] = {"ca_fle": "/ca.pem"}
    detail = _refusal(lambda: check_config(config))
    assert "unknown keys 'retries.atempts'" in detail and "'tls.ca_fle'" in detail, detail


def test_a_flood_of_unknown_keys_is_named_in_a_bounded_refusal() -> None:
    config = stored("csv")
    config.update({f"junk_{i}": i for i in range(1000)})
    detail = _refusal(lambda: check_config(config))
    assert "'junk_0'" in detail and "and 995 more" in detail and "'junk_999'" not in detail
    assert len(detail) < 2000


def test_an_odd_key_is_named_on_one_line() -> None:
    config = stored("csv")
    config["entities"]["claim"]["pattern\n"] = "x"
    config[7] = "x"  # YAML's keys need not be strings
    detail = _refusal(lambda: check_config(config))
    assert "\n" not in detail and "'pattern\\n'" in detail and "'7'" in detail, detail


# -- what is not checked --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_example_config_is_accepted_as_stored_and_as_loaded(
    kind: str, env: dict[str, str]
) -> None:
    assert EXAMPLE[kind][1] in check_config(stored(kind))
    built(loaded(kind, env))


def test_entity_names_are_the_administrators_own() -> None:
    """An entity may be called anything, a key's name included."""
    config = stored("csv")
    claim = config["entities"].pop("claim")
    config["entities"] = {"retries": claim, "feilds": dict(claim), "${WELFARE_OFFICE_X}": claim}
    assert set(check_config(config)) == {"retries", "feilds", "${WELFARE_OFFICE_X}"}


def test_values_are_not_looked_into_and_placeholders_stay_as_written() -> None:
    config = stored("rest")
    config["auth"]["token"] = "${CIVIL_REGISTRY_ATEMPTS:-atempts}"
    config["entities"]["citizen"]["fields"].append("atempts")
    before = copy.deepcopy(config)
    check_config(config)
    assert config == before


def test_a_section_of_the_wrong_type_is_still_named_by_the_builder() -> None:
    config = stored("sql")
    config["timeouts"] = 5
    assert "timeouts must be a map" in _refusal(lambda: check_config(config))


# -- the docs and the code agree ------------------------------------------------

_BLOCK = re.compile(r"^```(?:yaml|json)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NAMES_A_KIND = re.compile(r"\bkind\"?\s*:\s*\"?(?:rest|sql|soap|csv)\b")


def _doc_configs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every connector config written out in the docs (a block whose ``kind`` is one).

    Blocks that are not one YAML document (JSON lines, say) are skipped, unless
    they name a connector kind: a config the docs show must parse.
    """
    for doc in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for n, block in enumerate(_BLOCK.findall(doc.read_text())):
            try:
                value = yaml.safe_load(block)
            except yaml.YAMLError:
                if _NAMES_A_KIND.search(block):
                    raise
                continue
            if isinstance(value, dict) and value.get("kind") in KINDS:
                yield f"{doc.name}#{n}", value


DOC_CONFIGS = dict(_doc_configs())


def test_the_docs_hold_connector_configs() -> None:
    assert any(name.startswith("connectors.md#") for name in DOC_CONFIGS), DOC_CONFIGS


@pytest.mark.parametrize("block", sorted(DOC_CONFIGS))
def test_every_connector_config_in_the_docs_is_accepted(block: str) -> None:
    config = copy.deepcopy(DOC_CONFIGS[block])
    check_config(config)


def _documented_names() -> set[str]:
    """Every name written in code spans of docs/connectors.md (``a.b``, ``{a, b: c}``)."""
    text = (ROOT / "docs" / "connectors.md").read_text()
    return {w for span in re.findall(r"`([^`\n]+)`", text) for w in re.findall(r"\w+", span)}


def test_every_key_accord_reads_is_documented() -> None:
    from connectors._config_keys import CONFIG_KEYS, Named, Section

    def names(section: Section) -> Iterator[str]:
        for key, inner in section.keys.items():
            yield key
            if isinstance(inner, Section):
                yield from names(inner)
            elif isinstance(inner, Named):
                yield from names(inner.each)

    documented = _documented_names()
    missing = {k: sorted(set(names(root)) - documented) for k, root in CONFIG_KEYS.items()}
    assert not any(missing.values()), missing
    assert set(CONFIG_KEYS) == set(KINDS)
