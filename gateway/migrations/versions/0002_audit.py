"""Audit log: entries, chain head, Merkle nodes, checkpoints and cosignatures.

The tables and their append-only triggers are defined once, in the standalone
``audit`` package, so an auditor's copy and the gateway agree on every column.
"""

from alembic import op

from audit.store import create_schema

revision = "0002_audit"
down_revision = "0001_foundation"


def upgrade() -> None:
    create_schema(op.get_bind())


def downgrade() -> None:
    raise RuntimeError("the audit log is append-only: no migration drops it")
