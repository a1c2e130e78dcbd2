"""Writes the known-answer vector files in this directory (run it from the repo root).

``python -m tests.audit.vectors.make_vectors``

- ``rfc9162.json``: the Certificate Transparency reference leaves, roots and proofs
  (published by transparency-dev/merkle and google/certificate-transparency, used
  here as data), plus roots and proofs for larger trees computed by the naive
  recursive definitions of RFC 9162 §2.1 in ``tests/audit/reference.py``, which
  shares no code with ``audit.merkle``.
- ``signed_note.json``: the c2sp.org/signed-note example keys, texts and signatures
  (as published in the spec and Go's ``sumdb/note``), and a checkpoint plus a
  ``cosignature/v1`` line made from fixed seeds with the ``cryptography`` package
  directly (Ed25519 is deterministic, so the bytes are stable).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.audit import reference as ref

HERE = Path(__file__).resolve().parent

CT_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path) and (old size, new size, proof), as published.
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# c2sp.org/signed-note and golang.org/x/mod/sumdb/note examples.
NOTE_EXAMPLES = [
    {
        "skey": "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "vkey": "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "text": "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n",
        "signature": "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngo"
        "tpRZb6KE6RyyBwJnAM=",
    },
    {
        "skey": None,
        "vkey": "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "text": "This is an example message.\n",
        "signature": "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmR"
        "KuwHjG1Yu72IneyaQM=",
    },
]

LOG_SEED = bytes(range(32))
WITNESS_SEED = bytes(range(32, 64))


def _vkey(name: str, alg: int, public: bytes) -> str:
    kid = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]
    return f"{name}+{kid.hex()}+{base64.b64encode(bytes([alg]) + public).decode()}"


def _line(name: str, alg: int, public: bytes, sig: bytes) -> str:
    kid = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]
    return f"\u2014 {name} {base64.b64encode(kid + sig).decode()}\n"


def checkpoint_vector() -> dict[str, object]:
    """A checkpoint over the CT leaves, signed and cosigned from fixed seeds."""
    log_key = Ed25519PrivateKey.from_private_bytes(LOG_SEED)
    wit_key = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    log_pub = log_key.public_key().public_bytes(*raw)
    wit_pub = wit_key.public_key().public_bytes(*raw)
    origin, witness = "accord.test/audit", "witness.test/w1"
    root = ref.mth([bytes.fromhex(x) for x in CT_LEAVES])
    body = f"{origin}\n{len(CT_LEAVES)}\n{base64.b64encode(root).decode()}\n"
    note = body + "\n" + _line(origin, 0x01, log_pub, log_key.sign(body.encode()))
    ts = 1_700_000_000
    msg = f"cosignature/v1\ntime {ts}\n".encode() + body.encode()
    cosig = _line(witness, 0x04, wit_pub, struct.pack(">Q", ts) + wit_key.sign(msg))
    return {
        "log_seed": LOG_SEED.hex(),
        "witness_seed": WITNESS_SEED.hex(),
        "origin": origin,
        "witness": witness,
        "log_vkey": _vkey(origin, 0x01, log_pub),
        "witness_vkey": _vkey(witness, 0x04, wit_pub),
        "body": body,
        "note": note,
        "timestamp": ts,
        "cosignature_line": cosig,
    }


def rfc9162_vectors() -> dict[str, object]:
    gen_leaves = [bytes([i % 256, i // 256]) for i in range(40)]
    sizes = [*range(1, 14), 32, 33]
    return {
        "published": {
            "leaves": CT_LEAVES,
            "roots": CT_ROOTS,
            "inclusion": [{"index": i, "size": n, "path": p} for i, n, p in CT_INCLUSION],
            "consistency": [{"old": a, "new": b, "proof": p} for a, b, p in CT_CONSISTENCY],
        },
        "generated": {
            "leaves": [x.hex() for x in gen_leaves],
            "roots": {str(n): ref.mth(gen_leaves[:n]).hex() for n in range(41)},
            "inclusion": [
                {"index": i, "size": n, "path": [h.hex() for h in ref.path(i, gen_leaves[:n])]}
                for n in sizes
                for i in range(n)
            ],
            "consistency": [
                {
                    "old": a,
                    "new": b,
                    "proof": [h.hex() for h in ref.proof(a, gen_leaves[:b])],
                }
                for b in sizes
                for a in range(1, b + 1)
            ],
        },
    }


def main() -> None:
    (HERE / "rfc9162.json").write_text(json.dumps(rfc9162_vectors(), indent=1) + "\n")
    notes = {"examples": NOTE_EXAMPLES, "checkpoint": checkpoint_vector()}
    (HERE / "signed_note.json").write_text(json.dumps(notes, indent=1) + "\n")


if __name__ == "__main__":
    main()
