"""``accord agreement submit``'s refusals are hashed as the file submitted.

From an auditor's review: a submission refused over the API carries the
``request_sha256`` of the body sent, but one refused from the CLI carried none,
so nobody holding the file could show it was the one refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.cli.common import open_services


def _refusals() -> list[dict[str, Any]]:
    services = open_services()
    try:
        log = services.audit_log
        docs = [e.doc() for e in log.entries(0, log.head().size)]
    finally:
        services.close()
    return [d for d in docs if d["event"] == "agreement_change" and d["outcome"] == "refused"]


def test_cli_submission_refused_is_hashed_as_the_file_sent(
    cli: Callable[..., str], tmp_path: Path
) -> None:
    cli("db", "upgrade")
    for dept, clearance in (("registry", "restricted"), ("welfare", "confidential")):
        cli("dept", "register", dept, "--name", dept.title(), "--clearance", clearance)
        (tmp_path / f"{dept}.jwk").write_text(
            cli("keys", "generate", "--out", str(tmp_path / f"{dept}.pem"))
        )
        cli("dept", "add-key", dept, str(tmp_path / f"{dept}.jwk"))
    terms = tmp_path / "agreement.json"  # init writes it in the working directory
    cli("agreement", "init", "lookup", "--provider", "registry", "--consumer", "welfare")
    signed = tmp_path / "a.signed.json"
    key = str(tmp_path / "registry.pem")
    cli("agreement", "sign", str(terms), "--key", key, "--party", "provider", "-o", str(signed))
    # Only the provider signed; written as a person might, not as json.dumps would.
    sent = ("\r\n" + json.dumps(json.loads(signed.read_text()), indent="\t") + " \n").encode()
    signed.write_bytes(sent)

    out = cli("agreement", "submit", str(signed), ok=False)

    assert "missing" in out
    [entry] = _refusals()
    assert entry["actor"] == "cli:operator"
    assert entry["request_sha256"] == hashlib.sha256(sent).hexdigest()
    assert entry["detail"] == {"submission": "signed", "body_bytes": len(sent)}
    assert entry["agreement"] == "lookup@1"
