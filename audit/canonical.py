"""RFC 8785 (JCS) canonical JSON bytes, fast for the documents the log holds.

``rfc8785.dumps`` is pure Python and costs ~40 us an entry, which would cap both
appending and verifying. JCS output equals the standard library's
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` whenever
the document has no number JCS writes differently (floats outside the range where
Python's ``repr`` and ECMAScript's ``Number.toString`` agree, integral floats,
integers beyond 2^53) and no key whose UTF-16 order differs from its code-point
order (non-ASCII keys). ``canonical_bytes`` checks exactly that and otherwise
falls back to ``rfc8785``, so its answer is always the JCS answer (a property test
compares the two on generated documents).
"""

from __future__ import annotations

import json
import math
from typing import Any

import rfc8785

__all__ = ["CanonicalizationError", "canonical_bytes"]

CanonicalizationError = rfc8785.CanonicalizationError
_MAX_SAFE = 2**53 - 1
_dumps = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


def _plain(value: Any, depth: int = 0) -> bool:
    """True when the stdlib encoding of ``value`` is already its JCS encoding."""
    if depth > 64:
        return False
    t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return bool(-_MAX_SAFE <= value <= _MAX_SAFE)
    if t is float:
        a = abs(value)
        return math.isfinite(value) and 1e-4 <= a < 1e16 and not value.is_integer()
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not k.isascii() or not _plain(v, depth + 1):
                return False
        return True
    if t is list:
        return all(_plain(v, depth + 1) for v in value)
    return False


def canonical_bytes(doc: Any) -> bytes:
    """The RFC 8785 bytes of ``doc``; raises ``CanonicalizationError`` (or TypeError)."""
    if _plain(doc):
        try:
            return _dumps(doc).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: let rfc8785 give its own error
            pass
    out: bytes = rfc8785.dumps(doc)
    return out
