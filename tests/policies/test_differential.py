"""Invariant 5: the same input gets the same decision from both engines.

Every corpus case runs on the embedded engine and on a real OPA server; the
test fails on any difference, and on a difference from the case's expectation.
Hypothesis then generates inputs from the input schema (and near-misses of it)
and requires only agreement.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.engine import DENY_CODES
from tests.policies.conftest import Engines
from tests.policies.harness import Case, load_corpus, normalise
from tests.policies.strategies import near_valid_inputs, schema_inputs

CASES = load_corpus()


def both(engines: Engines, doc: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    a = engines.loop.run(engines.embedded.decide(doc))
    b = engines.loop.run(engines.opa.decide(doc))
    return normalise(a), normalise(b)


@pytest.mark.opa
@pytest.mark.parametrize("case", CASES, ids=[f"{c.file}:{c.name}" for c in CASES])
def test_corpus_case_same_on_both_engines(engines: Engines, case: Case) -> None:
    embedded, opa = both(engines, case.input)
    assert embedded == opa
    assert embedded["policy_version"] == engines.bundle.version
    expect = case.expect
    assert embedded["allow"] is expect["allow"]
    assert sorted({r["code"] for r in embedded["deny"]}) == sorted(set(expect["codes"]))
    if "obligations" in expect:
        assert embedded["obligations"] == expect["obligations"]
    if "level" in expect:
        assert embedded["level"] == expect["level"]
    if "deny" in expect:  # every reason, each once
        assert embedded["deny"] == expect["deny"]
    assert "policy_error" not in {r["code"] for r in embedded["deny"]}


def test_corpus_covers_every_deny_code() -> None:
    seen = {code for c in CASES for code in c.expect["codes"]}
    assert seen == DENY_CODES - {"policy_error"}


@pytest.mark.opa
@settings(
    max_examples=int(os.environ.get("ACCORD_POLICY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(doc=st.one_of(near_valid_inputs(), schema_inputs()))
def test_generated_inputs_same_on_both_engines(engines: Engines, doc: Any) -> None:
    embedded, opa = both(engines, doc)
    assert embedded == opa
    assert "policy_error" not in {r["code"] for r in embedded["deny"]}
