"""SHA-256 of a batch of messages in one call (OpenSSL's libcrypto), built from
``_sha256.c`` when a C compiler and OpenSSL's headers are there; ``audit._runs``
uses ``hashlib`` when it is not."""

from collections.abc import Iterable

def each(prefix: bytes, messages: Iterable[bytes], /) -> list[bytes]:
    """SHA-256(prefix || m) of every message m."""

def strided(prefix: bytes, blob: bytes, width: int, /) -> list[bytes]:
    """SHA-256(prefix || s) of every ``width``-byte slice s of ``blob``; ValueError unless
    the slices tile it."""
