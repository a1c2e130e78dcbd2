"""Policy store: bundle versions, the active pointer and its history, the decision log.

``policy_head`` is a single row (id 1) that every workflow change updates
first, so changes from several officers and nodes are serialised by one row
lock on PostgreSQL and by the write lock on SQLite.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_policy"
down_revision = "0002_audit"

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_version",
        sa.Column("version", sa.String(71), primary_key=True),
        sa.Column("files", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.String(1000), nullable=False),
        sa.Column("base_version", sa.String(71), nullable=True),
        sa.Column("proposer", sa.String(200), nullable=False),
        sa.Column("proposed_at", TS, nullable=False),
        sa.Column("checks", JSON, nullable=True),
        sa.Column("checked_at", TS, nullable=True),
        sa.Column("impact", JSON, nullable=True),
        sa.Column("approver", sa.String(200), nullable=True),
        sa.Column("approved_at", TS, nullable=True),
        sa.Column("rejected_by", sa.String(200), nullable=True),
        sa.Column("rejected_at", TS, nullable=True),
        sa.Column("activated_at", TS, nullable=True),
        sa.Column("retired_at", TS, nullable=True),
    )
    op.create_index("ix_policy_version_status", "policy_version", ["status"])
    op.create_table(
        "policy_activation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "version", sa.String(71), sa.ForeignKey("policy_version.version"), nullable=False
        ),
        sa.Column("previous_id", sa.Integer, sa.ForeignKey("policy_activation.id"), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "policy_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.String(71), nullable=True),
        sa.Column("activation_id", sa.Integer, nullable=True),
        sa.Column("serial", sa.Integer, nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "policy_head",
            sa.column("id", sa.Integer),
            sa.column("version", sa.String),
            sa.column("activation_id", sa.Integer),
            sa.column("serial", sa.Integer),
        ),
        [{"id": 1, "version": None, "activation_id": None, "serial": 0}],
    )
    op.create_table(
        "policy_decision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("exchange_id", sa.String(200), nullable=False),
        sa.Column("agreement", sa.String(200), nullable=True),
        sa.Column("consumer", sa.String(200), nullable=True),
        sa.Column("dataset", sa.String(200), nullable=True),
        sa.Column("policy_version", sa.String(71), nullable=True),
        sa.Column("allow", sa.Boolean, nullable=False),
        sa.Column("codes", JSON, nullable=False),
        sa.Column("decision", JSON, nullable=False),
        sa.Column("input", JSON, nullable=False),
        sa.Column("decided_at", TS, nullable=False),
    )
    op.create_index("ix_policy_decision_decided_at", "policy_decision", ["decided_at"])
    op.create_index("ix_policy_decision_exchange_id", "policy_decision", ["exchange_id"])


def downgrade() -> None:
    for table in ("policy_decision", "policy_head", "policy_activation", "policy_version"):
        op.drop_table(table)
