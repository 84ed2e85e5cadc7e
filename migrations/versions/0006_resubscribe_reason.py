"""Who re-subscribed an unsubscribed address, when and why (columns on subscribers).

The latest re-subscription is enough: it is shown on the subscriber's row, and the
address's own unsubscribe time stays where it was.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("resubscribed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("subscribers", sa.Column("resubscribed_by_id", sa.Integer(),
                                           sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True))
    op.add_column("subscribers", sa.Column("resubscribe_reason", sa.String(200), nullable=True))
    op.create_index("ix_subscribers_resubscribed_by_id", "subscribers", ["resubscribed_by_id"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_resubscribed_by_id", table_name="subscribers")
    op.drop_column("subscribers", "resubscribe_reason")
    op.drop_column("subscribers", "resubscribed_by_id")
    op.drop_column("subscribers", "resubscribed_at")
