"""The published entry schema file is the one the code enforces, and it is closed."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import rfc8785

from audit.entry import seal, verify_sealed
from audit.errors import EntryInvalid
from audit.schema import ENTRY_SCHEMA, EVENTS, schema_json
from tests.audit.conftest import entry

FILE = Path(__file__).resolve().parents[2] / "schemas" / "audit-entry.schema.json"


def test_schema_file_is_generated_from_the_code() -> None:
    assert FILE.read_text("utf-8") == schema_json(), "run: python -m audit.schema > " + str(FILE)
    assert json.loads(FILE.read_text("utf-8")) == ENTRY_SCHEMA


def test_schema_file_is_valid_2020_12_and_accepts_sealed_entries() -> None:
    schema = json.loads(FILE.read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    for i in range(len(EVENTS) * 3):
        data = seal(entry(i), seq=i, ts="2026-06-01T12:00:00.123Z", node="gw-1")
        assert rfc8785.dumps(json.loads(data)) == data
        v.validate(json.loads(data))
        verify_sealed(data, i)


@pytest.mark.parametrize(
    "extra",
    [
        {"national_id": "1234"},  # a new key cannot smuggle a raw identifier in
        {"fields": ["given_name", "given_name"]},
        {"request_sha256": "ABC"},
        {"subject": "Jane Doe"},
        {"agreement": "no-version"},
    ],
)
def test_closed_schema_refuses_values_and_raw_identifiers(extra: dict[str, object]) -> None:
    data = json.dumps(
        {
            "v": 1,
            "seq": 0,
            "ts": "2026-06-01T12:00:00.123Z",
            "node": "n",
            "event": "exchange",
            **extra,
        }
    )
    assert not jsonschema.Draft202012Validator(ENTRY_SCHEMA).is_valid(json.loads(data))
    with pytest.raises(EntryInvalid):
        verify_sealed(rfc8785.dumps(json.loads(data)), 0)
