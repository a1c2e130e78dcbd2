"""A binding's ``${VAR}`` placeholders reach only its own provider's variables.

The config is written by an administrator and filled from the gateway's own
environment, which also holds the gateway's settings and every other provider's
secrets. These tests pin the scope both where a binding is written
(``verify_placeholder_scope``) and where it is expanded (``expand_placeholders``),
including the syntaxes that might slip past a naive check.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.config import (
    expand_placeholders,
    placeholder_prefix,
    verify_placeholder_scope,
)
from connectors.interface import ConnectorConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO = ("civil-registry", "health-insurer", "tax-authority", "welfare-office", "citizen-portal")


class WatchedEnv(Mapping[str, str]):
    """An environment that records every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        self.known = values
        self.asked: list[str] = []

    def __getitem__(self, name: str) -> str:
        self.asked.append(name)
        return self.known[name]

    def __contains__(self, name: object) -> bool:
        self.asked.append(str(name))
        return name in self.known

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the environment is never listed")

    def __len__(self) -> int:
        raise AssertionError("the environment is never listed")


def gateway_env() -> WatchedEnv:
    return WatchedEnv(
        {
            "CIVIL_REGISTRY_URL": "http://registry.example",
            "CIVIL_REGISTRY_TOKEN": "civil-token",
            "HEALTH_INSURER_DB_URL": "postgresql://insurer:pw@db/claims",
            "ACCORD_PSEUDONYM_SECRET": "root-of-every-pseudonym",
            "ACCORD_DATABASE_URL": "postgresql://accord:pw@db/accord",
            "HOME": "/home/accord",
            "home": "/lower/case",
            "CIVIL_SECRET": "belongs-to-civil",
        }
    )


def rest(token: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "rest", "base_url": "${CIVIL_REGISTRY_URL}", "auth": {"token": token}, **extra}


def test_the_prefix_is_the_provider_id_upper_cased() -> None:
    assert placeholder_prefix("civil-registry") == "CIVIL_REGISTRY_"
    assert placeholder_prefix("tax-authority") == "TAX_AUTHORITY_"
    assert placeholder_prefix("a1-b2") == "A1_B2_"


def test_own_variables_are_filled() -> None:
    env = gateway_env()
    out = expand_placeholders(
        rest("${CIVIL_REGISTRY_TOKEN}", note="${CIVIL_REGISTRY_MISSING:-fallback}"),
        env,
        provider="civil-registry",
        others=DEMO,
    )
    assert out["base_url"] == "http://registry.example"
    assert out["auth"]["token"] == "civil-token"
    assert out["note"] == "fallback"
    verify_placeholder_scope(rest("${CIVIL_REGISTRY_TOKEN}"), "civil-registry", others=DEMO)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("${HEALTH_INSURER_DB_URL}", "HEALTH_INSURER_DB_URL"),  # another provider's
        ("${ACCORD_PSEUDONYM_SECRET}", "ACCORD_PSEUDONYM_SECRET"),  # the gateway's
        ("${HOME}", "HOME"),  # the process's
        ("${ACCORD_DATABASE_URL:-x}", "ACCORD_DATABASE_URL"),  # a default is no way round
        ("${HEALTH_INSURER_DB_URL:-}", "HEALTH_INSURER_DB_URL"),
        ("${CIVIL_REGISTRY_TOKEN}${HOME}", "HOME"),  # adjacent placeholders
        ("$${HOME}", "HOME"),  # no escape syntax: still a placeholder
        ("x${HOME}y", "HOME"),
        ("${CIVIL_REGISTRY}", "CIVIL_REGISTRY"),  # the id without its separator
        ("${CIVIL_REGISTRYX_TOKEN}", "CIVIL_REGISTRYX_TOKEN"),
    ],
)
def test_out_of_scope_names_are_refused_without_being_read(text: str, named: str) -> None:
    env = gateway_env()
    with pytest.raises(ConnectorConfigError) as write:
        verify_placeholder_scope(rest(text), "civil-registry", others=DEMO)
    with pytest.raises(ConnectorConfigError) as expand:
        expand_placeholders(rest(text), env, provider="civil-registry", others=DEMO)
    for err in (write.value, expand.value):
        assert f"${{{named}}}" in err.detail and "CIVIL_REGISTRY_" in err.detail
        assert not any(v in err.detail for v in env.known.values())
    assert named not in env.asked  # checked before the lookup: never read


def test_placeholders_in_lists_and_nested_maps_are_scoped() -> None:
    config = rest("${CIVIL_REGISTRY_TOKEN}", entities={"citizen": {"fields": ["a", "${HOME}"]}})
    with pytest.raises(ConnectorConfigError, match=r"\$\{HOME\}"):
        verify_placeholder_scope(config, "civil-registry")
    with pytest.raises(ConnectorConfigError, match=r"\$\{HOME\}"):
        expand_placeholders(config, gateway_env(), provider="civil-registry")


def test_no_gateway_setting_whatever_the_provider_is_called() -> None:
    """A department ``accord`` has the gateway's own prefix: it may name nothing."""
    env = gateway_env()
    for provider in ("accord", "accord-x"):
        config = rest("${ACCORD_PSEUDONYM_SECRET}", base_url="${ACCORD_X_URL:-http://h}")
        with pytest.raises(ConnectorConfigError, match="never ACCORD_"):
            verify_placeholder_scope(config, provider)
        with pytest.raises(ConnectorConfigError, match="never ACCORD_"):
            expand_placeholders(config, env, provider=provider)
    assert not any(name.startswith("ACCORD_") for name in env.asked)


def test_a_shorter_department_id_cannot_reach_a_longer_ones_variables() -> None:
    """``civil`` has the prefix ``CIVIL_``, which ``CIVIL_REGISTRY_TOKEN`` also starts
    with: a name belongs to the registered department with the longest prefix."""
    env = gateway_env()
    with pytest.raises(ConnectorConfigError, match="belongs to civil-registry"):
        verify_placeholder_scope(rest("${CIVIL_REGISTRY_TOKEN}"), "civil", others=DEMO)
    with pytest.raises(ConnectorConfigError, match="belongs to civil-registry"):
        expand_placeholders(rest("${CIVIL_SECRET}"), env, provider="civil", others=DEMO)
    assert "CIVIL_REGISTRY_URL" not in env.asked
    # Its own variables, and the longer id's own, still work.
    own = {"kind": "rest", "auth": {"token": "${CIVIL_SECRET}"}}
    out = expand_placeholders(own, env, provider="civil", others=DEMO)
    assert out["auth"]["token"] == "belongs-to-civil"
    verify_placeholder_scope(
        rest("${CIVIL_REGISTRY_TOKEN}"), "civil-registry", others=[*DEMO, "civil"]
    )


def test_lower_case_and_malformed_names_are_refused_when_written() -> None:
    """Expansion leaves them as text (names are upper-case), and writing refuses them,
    so what is stored never looks like a read it is not."""
    for text in ("${home}", "${Civil_Registry_Token}", "${}", "${ HOME}", "${CIVIL_REGISTRY-X}"):
        with pytest.raises(ConnectorConfigError, match="CIVIL_REGISTRY_"):
            verify_placeholder_scope(rest(text), "civil-registry")
    env = gateway_env()
    out = expand_placeholders(rest("${home}"), env, provider="civil-registry")
    assert out["auth"]["token"] == "${home}"
    assert "home" not in env.asked


def test_a_default_holding_a_placeholder_is_never_expanded() -> None:
    """``${A:-${B}}``: the default is text up to the first ``}``; it is not read, and
    writing refuses it anyway since ``B`` is out of scope."""
    text = "${CIVIL_REGISTRY_NOPE:-${ACCORD_DATABASE_URL}}"
    with pytest.raises(ConnectorConfigError, match=r"\$\{ACCORD_DATABASE_URL\}"):
        verify_placeholder_scope(rest(text), "civil-registry")
    env = gateway_env()
    out = expand_placeholders(rest(text), env, provider="civil-registry")
    assert out["auth"]["token"] == "${ACCORD_DATABASE_URL}"
    assert "ACCORD_DATABASE_URL" not in env.asked


def test_a_value_from_the_environment_is_not_expanded_again() -> None:
    env = gateway_env()
    env.known["CIVIL_REGISTRY_TOKEN"] = "${ACCORD_PSEUDONYM_SECRET}"
    out = expand_placeholders(rest("${CIVIL_REGISTRY_TOKEN}"), env, provider="civil-registry")
    assert out["auth"]["token"] == "${ACCORD_PSEUDONYM_SECRET}"
    assert "ACCORD_PSEUDONYM_SECRET" not in env.asked


def test_keys_are_never_expanded_nor_checked() -> None:
    env = gateway_env()
    config = {"kind": "rest", "entities": {"${HOME}": {"key": "ssn"}}, "${ACCORD_X}": 1}
    verify_placeholder_scope(config, "civil-registry")
    out = expand_placeholders(config, env, provider="civil-registry")
    assert out == config
    assert env.asked == []


def test_non_string_values_pass_through() -> None:
    config = {"kind": "sql", "max_rows": 10, "ok": True, "none": None, "ratio": 0.5}
    verify_placeholder_scope(config, "health-insurer")
    assert expand_placeholders(config, gateway_env(), provider="health-insurer") == config


@pytest.mark.parametrize(
    ("provider", "folder"),
    [
        ("civil-registry", "civil_registry"),
        ("health-insurer", "health_insurer"),
        ("tax-authority", "tax_authority"),
        ("welfare-office", "welfare_office"),
    ],
)
def test_the_example_configs_are_in_their_providers_scope(provider: str, folder: str) -> None:
    config = yaml.safe_load((EXAMPLES / folder / "connector.yaml").read_text("utf-8"))
    verify_placeholder_scope(config, provider, others=DEMO)
