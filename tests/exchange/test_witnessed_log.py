"""A gateway configured with a witness gets its checkpoints cosigned while it serves."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog, NoteSigner, engine_for
from audit.checkpoint import Cosigner
from audit.witness import Witness, make_server
from examples.launch import Departments
from tests._support.gateway import running_gateway, seeded_services
from tests.exchange.conftest import subject_with


def test_checkpoints_are_cosigned_by_the_configured_witness(
    departments: Departments, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'accord.db'}"
    services = seeded_services(db_url, tmp_path)
    log_vkey = NoteSigner(services.settings.audit_origin, services.log_key).verifier()  # type: ignore[arg-type]
    services.close()
    cosigner = Cosigner("witness.test/w1", Ed25519PrivateKey.generate())
    witness = Witness(cosigner, [log_vkey], tmp_path / "witness.db")
    server = make_server(witness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    witness_vkey = cosigner.verifier().vkey()
    try:
        with running_gateway(
            db_url=db_url,
            data_dir=tmp_path,
            departments_env=departments.env,
            extra_env={
                "ACCORD_WITNESS_URLS": json.dumps([f"http://127.0.0.1:{server.server_port}"]),
                "ACCORD_WITNESS_VKEYS": json.dumps([witness_vkey]),
                "ACCORD_CHECKPOINT_EVERY": "5",
            },
        ) as gw:
            client = gw.client("welfare-office")
            for _ in range(6):
                client.exchange(
                    agreement="welfare-person-lookup",
                    dataset="person",
                    purpose="benefit-eligibility",
                    query={"kind": "record", "subject": subject_with("civil")},
                )
            engine = engine_for(db_url)
            log = AuditLog(engine)
            deadline = time.monotonic() + 20
            note = ""
            while time.monotonic() < deadline:
                note = log.latest_checkpoint() or ""
                if "witness.test/w1" in note:
                    break
                time.sleep(0.2)
            log.close()
            engine.dispose()
            assert "— witness.test/w1 " in note, note
            assert witness.latest(log_vkey.name) is not None
            # the witness key comes from ACCORD_WITNESS_VKEYS, as the gateway's does
            out = gw.audit_cli("verify")
            assert out.returncode == 0, out.stdout + out.stderr
            assert "witnessed by witness.test/w1" in out.stdout
    finally:
        server.shutdown()
