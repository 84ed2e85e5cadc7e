"""A session version per account: logging out or a new password ends every session of that account.

The signed session cookie names the account and the version it was issued for; bumping
the number makes every cookie issued before it (on any device, copied or not) worthless.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("session_version", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    op.drop_column("users", "session_version")
