"""Drop two job indexes that every job write maintained for no query.

ix_jobs_owner_id is a prefix of ix_jobs_owner_created, which serves the same lookups;
ix_jobs_kind served no query (kinds are few and are always combined with something more
selective). Each job INSERT and status UPDATE now maintains five indexes instead of seven.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_owner_id")
        batch_op.drop_index("ix_jobs_kind")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index("ix_jobs_kind", ["kind"], unique=False)
        batch_op.create_index("ix_jobs_owner_id", ["owner_id"], unique=False)
