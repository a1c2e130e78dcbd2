"""The `accord` CLI end to end: keys, departments, agreements signed and verified."""

from __future__ import annotations

import json
import stat
from pathlib import Path


def test_keys_generate_writes_0600_and_prints_jwk(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli("keys", "generate", "--out", str(tmp_path / "k.pem"), "--alg", "ES256")
    jwk = json.loads(out)
    assert jwk["kty"] == "EC" and jwk["alg"] == "ES256" and "d" not in jwk
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    cli("keys", "generate", "--out", str(tmp_path / "k.pem"), ok=False)  # no silent overwrite


def test_full_agreement_flow(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("db", "upgrade")
    for dept, clearance in (("registry", "restricted"), ("welfare", "confidential")):
        cli("dept", "register", dept, "--name", dept.title(), "--clearance", clearance)
        jwk = cli("keys", "generate", "--out", str(tmp_path / f"{dept}.pem"))
        (tmp_path / f"{dept}.jwk").write_text(jwk)
        cli("dept", "add-key", dept, str(tmp_path / f"{dept}.jwk"))
    cli(
        "agreement",
        "init",
        "lookup",
        "--provider",
        "registry",
        "--consumer",
        "welfare",
        "--out",
        str(tmp_path / "a.json"),
    )
    cli(
        "agreement",
        "sign",
        str(tmp_path / "a.json"),
        "--key",
        str(tmp_path / "registry.pem"),
        "--party",
        "provider",
    )
    signed = tmp_path / "a.signed.json"
    out = cli("agreement", "verify", str(signed), ok=False)  # consumer has not signed yet
    assert "consumer" in out
    cli(
        "agreement",
        "sign",
        str(signed),
        "--key",
        str(tmp_path / "welfare.pem"),
        "--party",
        "consumer",
    )
    out = cli("agreement", "verify", str(signed))
    assert "all required signatures verify" in out
    offline = cli(
        "agreement",
        "verify",
        str(signed),
        "--jwk",
        str(tmp_path / "registry.jwk"),
        "--jwk",
        str(tmp_path / "welfare.jwk"),
    )
    assert "offline" in offline
    cli("agreement", "submit", str(signed))
    out = cli("agreement", "list")
    assert "lookup" in out and "active" in out
    kid = json.loads((tmp_path / "welfare.jwk").read_text())["kid"]
    # A thumbprint may start with "-": after "--" it is never taken for an option.
    cli("dept", "revoke-key", "--reason", "compromised", "--", kid)
    out = cli("agreement", "verify", str(signed), ok=False)
    assert "key_revoked" in out


def test_bad_input_gives_a_clear_error_not_a_traceback(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "broken.json").write_text("{nope")
    out = cli("agreement", "verify", str(tmp_path / "broken.json"), ok=False)
    assert "malformed_json" in out and "Traceback" not in out
    out = cli("dept", "register", "x", "--name", "X", "--clearance", "cosmic", ok=False)
    assert "unknown_classification_level" in out


def test_a_key_id_that_starts_with_a_dash_goes_after_double_dash(cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("dept", "revoke-key", "--reason", "lost", "--", "-Xk1", ok=False)
    assert "No such option" not in out
    assert "-Xk1" in out  # looked up as a key id, and not found
