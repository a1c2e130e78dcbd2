"""Signed data-sharing agreements: terms, multi-party JWS signatures, lifecycle."""
