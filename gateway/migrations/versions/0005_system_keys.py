"""A department key may be bound to one system of its department (``system_id``).

Existing keys stay unbound (NULL): they keep signing for every system of their
department that has no capabilities, as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_system_keys"
down_revision = "0004_exchange"


def upgrade() -> None:
    with op.batch_alter_table("department_key") as batch:
        batch.add_column(sa.Column("system_id", sa.String(63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("department_key") as batch:
        batch.drop_column("system_id")
