"""Finding U+0000 in JSON text, which Accord refuses in every request.

No identifier, purpose or name in Accord has a use for it, and the stores treat
it differently (PostgreSQL refuses it in text, SQLite keeps it). In JSON text it
can only be the escape ``\\u0000`` (a raw control character is not JSON), and an
escape is real when an even number of backslashes precedes its own.
"""

from __future__ import annotations

import re

__all__ = ["has_nul_escape"]

_ESCAPE = re.compile(rb"(\\+)u0000")  # JSON's escape is a lowercase u


def has_nul_escape(data: bytes) -> bool:
    """Whether JSON text ``data`` carries a NUL in one of its strings."""
    return b"u0000" in data and any(len(m.group(1)) % 2 == 1 for m in _ESCAPE.finditer(data))
