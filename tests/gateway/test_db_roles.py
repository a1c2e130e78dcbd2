"""docs/audit.md's PostgreSQL grants, applied as written, are enough to run the
gateway as the application role and to verify the log as the auditor role.

The acceptance review applied the block (then only the audit tables) and the
gateway would not start as the application role: permission denied on
``alembic_version``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from examples.launch import Departments, launch
from gateway.auth.humans import dev_issuer_key, issue_dev_token
from gateway.client import Denied
from gateway.services import Services
from tests._support.gateway import running_gateway
from tests._support.servers import ROOT, fresh_database
from tests.exchange.conftest import subject_with

DOC = ROOT / "docs" / "audit.md"
AGREEMENT, DATASET, PURPOSE = "welfare-person-lookup", "person", "benefit-eligibility"

pytestmark = pytest.mark.postgres


def grants_block() -> str:
    """The first ```sql block of the "Database roles" section, verbatim."""
    section = DOC.read_text(encoding="utf-8").split("## Database roles", 1)[1]
    found = re.search(r"```sql\n(.*?)```", section, re.S)
    assert found, "docs/audit.md has no SQL block under Database roles"
    return found.group(1)


def statements(block: str, app: str, auditor: str) -> list[str]:
    sql = "\n".join(re.sub(r"--.*$", "", text) for text in block.splitlines())
    sql = re.sub(r"\baccord_app\b", app, sql)
    sql = re.sub(r"\baccord_auditor\b", auditor, sql)
    return [s.strip() for s in sql.split(";") if s.strip()]


@pytest.fixture
def departments(tmp_path: Path) -> Iterator[Departments]:
    with launch(data_dir=tmp_path / "departments") as deps:
        yield deps


def test_the_documented_grants_run_the_gateway_as_the_application_role(
    pg_server_url: str, tmp_path: Path, departments: Departments
) -> None:
    owner_url = fresh_database(pg_server_url)
    suffix = os.urandom(4).hex()
    app, auditor = f"accord_app_{suffix}", f"accord_auditor_{suffix}"
    owner = sa.create_engine(owner_url)

    def as_role(role: str) -> str:
        return sa.make_url(owner_url).set(username=role).render_as_string(hide_password=False)

    def grant(services: Services) -> None:
        """After the owner migrated and seeded: the roles and exactly the doc's block."""
        block = grants_block()
        with owner.begin() as conn:
            tables = conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            missing = [t for t in tables if not re.search(rf"\b{t}\b", block)]
            assert missing == [], f"docs/audit.md grants nothing on {missing}"
            conn.execute(sa.text(f"CREATE ROLE {app} LOGIN"))
            conn.execute(sa.text(f"CREATE ROLE {auditor} LOGIN"))
            for statement in statements(block, app, auditor):
                conn.execute(sa.text(statement))

    data = tmp_path / "gw"
    try:
        with running_gateway(
            db_url=owner_url,
            data_dir=data,
            departments_env=departments.env,
            prepare=grant,
            extra_env={"ACCORD_DATABASE_URL": as_role(app)},
        ) as gw:
            welfare = gw.client("welfare-office")
            query = {"kind": "record", "subject": subject_with("civil")}
            answer = welfare.exchange(
                agreement=AGREEMENT, dataset=DATASET, purpose=PURPOSE, query=query
            )
            assert answer.records

            token = issue_dev_token(
                dev_issuer_key(data / "keys"), subject="alice", roles=["admin"], audience="accord"
            )
            admin = {"Authorization": f"Bearer {token}"}
            r = httpx.post(
                f"{gw.url}/v1/agreements/welfare-person-lookup/versions/1/status",
                json={"status": "suspended", "reason": "grants test"},
                headers=admin,
            )
            assert r.status_code == 200, r.text
            with pytest.raises(Denied):
                welfare.exchange(agreement=AGREEMENT, dataset=DATASET, purpose=PURPOSE, query=query)

            verify = subprocess.run(
                [sys.executable, "-m", "audit.cli", "verify", "--log-key", str(gw.log_key)],
                cwd=data,
                env={**gw.env, "ACCORD_DATABASE_URL": as_role(auditor)},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert "verified" in verify.stdout
        log = "".join(p.read_text(errors="replace") for p in data.glob("gateway-*.log"))
        assert "permission denied" not in log.lower(), log[-3000:]
        reader = sa.create_engine(as_role(auditor))
        with pytest.raises(sa.exc.DBAPIError), reader.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_entries"))
        reader.dispose()
    finally:
        with owner.begin() as conn:
            for role in (app, auditor):
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
                ).first()
                if exists:
                    conn.execute(sa.text(f"DROP OWNED BY {role}"))
                    conn.execute(sa.text(f"DROP ROLE {role}"))
        owner.dispose()
