"""The audit entry schema (JSON Schema 2020-12), kept in code so the package stands alone.

``schemas/audit-entry.schema.json`` is generated from ``ENTRY_SCHEMA`` (a test keeps
them equal). The schema is closed (``additionalProperties: false``) so nobody can
slip a field value or a raw identifier into the log under a new key: entries hold
codes, names, hashes and pseudonyms only.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = [
    "ENTRY_SCHEMA",
    "ENTRY_VERSION",
    "EVENTS",
    "SCHEMA_ID",
    "SEALED_FIELDS",
    "schema_json",
]

ENTRY_VERSION = 1
SCHEMA_ID = "urn:accord:schema:audit-entry:1"
EVENTS = (
    "exchange",
    "denial",
    "auth_failure",
    "agreement_change",
    "policy_change",
    "key_change",
    "department_change",
    "checkpoint",
    "witness",
    "embargo",
    "admin",
    "access_log",
    "receipt",
)
SEALED_FIELDS = ("v", "seq", "ts", "node")
"""Set by the appender under the chain-head lock, never by the caller."""

_ID = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\s]+$"}
_TEXT = {"type": "string", "maxLength": 500}
_CODE = {"type": "string", "pattern": "^[a-z0-9_.:-]{1,100}$"}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

ENTRY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Accord audit log entry",
    "description": (
        "One record of the tamper-evident audit log, stored as its RFC 8785 canonical "
        "bytes. Holds codes, identifiers of systems and agreements, hashes and subject "
        "pseudonyms; never a field value or a raw personal identifier."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["v", "seq", "ts", "node", "event"],
    "properties": {
        "v": {"const": ENTRY_VERSION, "description": "entry schema version"},
        "seq": {"type": "integer", "minimum": 0, "description": "position in the log, gapless"},
        "ts": {
            "type": "string",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
            "description": "UTC time the appender sealed the entry, millisecond precision",
        },
        "node": {**_ID, "description": "gateway node that appended the entry"},
        "event": {"enum": list(EVENTS)},
        "exchange_id": {**_ID, "description": "the exchange this entry describes"},
        "actor": {**_ID, "description": "who acted: department/system id or officer id"},
        "consumer": {**_ID, "description": "consuming department id"},
        "provider": {**_ID, "description": "providing department id"},
        "agreement": {
            "type": "string",
            "pattern": "^[^\\s@]+@[0-9]+$",
            "description": "agreement id@version",
        },
        "dataset": _ID,
        "purpose": _CODE,
        "fields": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[A-Za-z0-9_.\\[\\]-]{1,200}$"},
            "maxItems": 1000,
            "uniqueItems": True,
            "description": "names of the fields released (never their values)",
        },
        "operations": {
            "type": "object",
            "additionalProperties": _CODE,
            "description": "field name -> release operation applied",
        },
        "decision": {"enum": ["allow", "deny"]},
        "reasons": {"type": "array", "items": _CODE, "maxItems": 100},
        "policy_version": {**_SHA256, "description": "SHA-256 of the active policy bundle"},
        "request_sha256": _SHA256,
        "response_sha256": _SHA256,
        "subject": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{16,128}$",
            "description": "keyed pseudonym of the data subject (never the raw identifier)",
        },
        "outcome": _CODE,
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "latency_ms": {"type": "number", "minimum": 0},
        "problem": _CODE,
        "detail": {
            "type": "object",
            "maxProperties": 50,
            "propertyNames": {"pattern": "^[a-z0-9_]{1,64}$"},
            "additionalProperties": {
                "anyOf": [
                    _TEXT,
                    {"type": "integer"},
                    {"type": "boolean"},
                    {"type": "null"},
                    {"type": "array", "items": _TEXT, "maxItems": 100},
                ]
            },
            "description": "event-specific codes and ids (e.g. old/new status, key id)",
        },
    },
}


def schema_json() -> str:
    """The text of ``schemas/audit-entry.schema.json`` (``python -m audit.schema > …``)."""
    return json.dumps(ENTRY_SCHEMA, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_json())
