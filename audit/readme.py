"""The README written into every export bundle (also part of docs/audit.md)."""

from __future__ import annotations

__all__ = ["EXPORT_README"]

EXPORT_README = """\
# Accord audit log export

This directory is evidence from an Accord gateway's audit log. You can check it
with Accord's `audit` package alone (`accord audit verify DIR`, or
`python -c "import audit; print(audit.verify_export('DIR').to_json())"`), or with
your own tools: every format below is a published standard.

## Files

- `manifest.json`: the range (`from_seq` inclusive, `to_seq` exclusive), the chain
  hash before the range and the Merkle compact range at `from_seq` (hex).
- `entries.jsonl`: one entry per line. Each line *is* the exact RFC 8785 canonical
  JSON of the entry as it was written; hash the line without its newline.
- `hashes.txt`: `seq leaf_hash chain_hash` per entry (hex), as the gateway stored them.
- `checkpoints/*.note`: signed checkpoints (c2sp.org/tlog-checkpoint as a
  c2sp.org/signed-note), with any witness cosignatures (c2sp.org/tlog-cosignature)
  as extra signature lines.
- `proofs/consistency-OLD-NEW.json`: RFC 9162 consistency proofs between the
  checkpoints, and from the end of the range to the next checkpoint, with base64 hashes.
- `keys/log.vkey`, `keys/witnesses.vkeys`: verifier keys (signed-note vkey format).
  Compare them with the keys the gateway operator and the witnesses publish.

## What to recompute

1. `leaf_hash = SHA-256(0x00 || line)` for every line (RFC 9162 leaf hash).
2. `chain_i = SHA-256(chain_{i-1} || leaf_hash_i)`, starting from `prev_chain_hash`
   (32 zero bytes when the range starts at 0). Compare with `hashes.txt`.
3. Each entry's `seq` field equals its position; entries are canonical JSON.
4. The RFC 9162 Merkle root of the first N entries equals the root in the
   checkpoint for size N, whose signature verifies with the log's key; witness
   cosignatures verify with the witnesses' keys.
5. The consistency proof from `to_seq` to the next checkpoint ties the whole
   range to a signed (and ideally witnessed) tree head.

Any change, deletion, insertion, reordering or truncation shows up as a failure of
one of these checks. The log operator cannot rewrite history without changing a
root a witness has already cosigned.
"""
