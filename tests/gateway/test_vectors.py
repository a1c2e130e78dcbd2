"""Known-answer vectors for the standards the gateway implements (files in vectors/)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.jose import b64url_decode, jwk_thumbprint, public_jwk, public_key_from_jwk
from gateway.jose.jwk import sign_bytes, verify_bytes
from gateway.jose.jws import canonical_bytes

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", load("rfc7638.json")["cases"], ids=["rsa", "ed25519"])
def test_rfc7638_thumbprint(case: dict) -> None:
    assert jwk_thumbprint(case["jwk"]) == case["thumbprint"]


def test_rfc8037_ed25519_key_and_signature() -> None:
    v = load("rfc8037.json")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(v["private_d"]))
    jwk = public_jwk(key)
    assert jwk["x"] == v["public_jwk"]["x"]
    header, payload, sig = v["compact"].split(".")
    signing_input = f"{header}.{payload}".encode()
    # Ed25519 is deterministic: our signature must equal the RFC's byte for byte.
    assert sign_bytes(key, signing_input) == b64url_decode(sig)
    public, alg = public_key_from_jwk(v["public_jwk"])
    verify_bytes(public, alg, signing_input, b64url_decode(sig))


def test_rfc8785_sample_document() -> None:
    doc = load("rfc8785.json")["documents"][0]
    assert canonical_bytes(json.loads(doc["input"])) == doc["canonical"].encode("utf-8")


def test_rfc8785_property_sorting_by_utf16_code_units() -> None:
    doc = load("rfc8785.json")["documents"][1]
    out = json.loads(canonical_bytes(json.loads(doc["input"])))
    assert list(out) == doc["key_order"]


@pytest.mark.parametrize(("hex_bits", "expected"), load("rfc8785.json")["numbers"])
def test_rfc8785_numbers(hex_bits: str, expected: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(hex_bits))
    assert canonical_bytes(value).decode() == expected
