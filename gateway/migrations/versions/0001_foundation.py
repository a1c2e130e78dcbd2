"""Foundation: departments, systems, keys, agreements and their lifecycle events."""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_foundation"
down_revision = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "department",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("clearance", sa.String(64), nullable=False),
        sa.Column("contact", sa.String(320), nullable=False),
        sa.Column("caveats", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "department_system",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("department_id", sa.String(63), sa.ForeignKey("department.id"), nullable=False),
        sa.Column("system_id", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("capabilities", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("department_id", "system_id"),
    )
    op.create_index("ix_department_system_department_id", "department_system", ["department_id"])
    op.create_table(
        "department_key",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("department_id", sa.String(63), sa.ForeignKey("department.id"), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("jwk", JSON, nullable=False),
        sa.Column("not_before", TS, nullable=False),
        sa.Column("not_after", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_reason", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_department_key_department_id", "department_key", ["department_id"])
    op.create_table(
        "agreement",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(63), sa.ForeignKey("department.id"), nullable=False),
        sa.Column("consumer", sa.String(63), sa.ForeignKey("department.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("terms", JSON, nullable=False),
        sa.Column("signed", JSON, nullable=True),
        sa.Column("terms_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("agreement_id", "version"),
    )
    for column in ("agreement_id", "provider", "consumer"):
        op.create_index(f"ix_agreement_{column}", "agreement", [column])
    op.create_table(
        "agreement_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_pk", sa.Integer, sa.ForeignKey("agreement.pk"), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_agreement_event_agreement_pk", "agreement_event", ["agreement_pk"])


def downgrade() -> None:
    for table in (
        "agreement_event",
        "agreement",
        "department_key",
        "department_system",
        "department",
    ):
        op.drop_table(table)
