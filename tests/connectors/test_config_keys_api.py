"""Over HTTP: a binding whose connector config holds a misspelt key is refused.

``PUT /v1/departments/{provider}/datasets/{dataset}`` against a running gateway
(whose seeding binds every demo dataset, so the examples' configs pass the write
path too): a misspelt key answers 422 problem+json ``connector_config_invalid``
naming the key's place, and nothing is stored, neither a new binding nor a change
to an existing one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests._support.gateway import Gateway, sqlite_gateway

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with sqlite_gateway(tmp_path_factory.mktemp("gw-config-keys")) as g:
        yield g


def _binding(dataset: str) -> dict[str, Any]:
    """The demo's civil-registry binding, as ``gateway.demo`` writes it."""
    folder = EXAMPLES / "civil_registry"
    return {
        "dataset_id": dataset,
        "model": "person@1",
        "entity": "citizen",
        "connector": yaml.safe_load((folder / "connector.yaml").read_text()),
        "mapping": yaml.safe_load((folder / "citizen.mapping.yaml").read_text()),
        "subject_field": "person_id",
    }


def _put(gw: Gateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(
        f"{gw.url}/v1/departments/civil-registry/datasets/{body['dataset_id']}",
        json=body,
        headers=gw.staff(),
        timeout=30,
    )


def _stored(gw: Gateway, dataset: str) -> dict[str, Any] | None:
    engine = sa.create_engine(gw.env["ACCORD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT connector FROM dataset_binding"
                    " WHERE provider = 'civil-registry' AND dataset_id = :d"
                ),
                {"d": dataset},
            ).scalar_one_or_none()
    finally:
        engine.dispose()
    return json.loads(row) if isinstance(row, str) else row


@pytest.mark.parametrize("dataset", ["person-typo", "person"])
def test_a_misspelt_retries_key_is_refused_and_nothing_is_stored(gw: Gateway, dataset: str) -> None:
    """``person-typo`` is new; ``person`` is the demo's binding, which must stay as it was."""
    before = _stored(gw, dataset)
    body = _binding(dataset)
    body["connector"]["retries"]["atempts"] = body["connector"]["retries"].pop("attempts")
    r = _put(gw, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "connector_config_invalid", problem
    assert problem["type"] == "urn:accord:problem:connector_config_invalid"
    assert "'retries.atempts' (did you mean 'attempts'?)" in problem["detail"], problem
    assert _stored(gw, dataset) == before
    assert (before is None) == (dataset == "person-typo")


def test_the_same_binding_spelt_right_is_stored(gw: Gateway) -> None:
    body = _binding("person-spelt-right")
    r = _put(gw, body)
    assert r.status_code == 200, r.text
    assert _stored(gw, "person-spelt-right") == body["connector"]
