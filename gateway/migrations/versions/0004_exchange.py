"""Exchange flow: replay cache, quota counters, dataset bindings, consumer mappings,
and the generation counter that lets nodes cache read-mostly rows safely."""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004_exchange"
down_revision = "0003_policy"

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "request_jti",
        sa.Column("iss", sa.String(63), primary_key=True),
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("expires_at", TS, nullable=False, index=True),
    )
    op.create_table(
        "usage_counter",
        sa.Column("agreement_id", sa.String(63), primary_key=True),
        sa.Column("window", sa.String(32), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "state_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "state_generation", sa.column("id", sa.Integer), sa.column("value", sa.BigInteger)
        ),
        [{"id": 1, "value": 0}],
    )
    op.create_table(
        "dataset_binding",
        sa.Column("provider", sa.String(63), sa.ForeignKey("department.id"), primary_key=True),
        sa.Column("dataset_id", sa.String(63), primary_key=True),
        sa.Column("model", sa.String(80), nullable=False),
        sa.Column("entity", sa.String(80), nullable=False),
        sa.Column("connector", JSON, nullable=False),
        sa.Column("mapping", JSON, nullable=False),
        sa.Column("subject_field", sa.String(80), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "consumer_mapping",
        sa.Column("consumer", sa.String(63), sa.ForeignKey("department.id"), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("mapping", JSON, nullable=False),
        sa.Column("json_schema", JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "state_generation",
        "consumer_mapping",
        "dataset_binding",
        "usage_counter",
        "request_jti",
    ):
        op.drop_table(table)
