"""The schema the migrations build: the same as the models, and cheap to delete from."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from webapp.extensions import db


def test_the_migrations_build_exactly_what_the_models_declare(app):
    """A model change without its migration (or the reverse) shows up here, not in production."""
    with app.app_context(), db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert differences == []


def test_every_foreign_key_that_a_delete_follows_is_indexed(app):
    """ON DELETE CASCADE / SET NULL looks up the referencing rows for every deleted row:
    without an index on the referencing column, pruning old jobs scans whole tables."""
    with app.app_context():
        unindexed = db.session.execute(text("""
            SELECT c.conrelid::regclass::text || '.' || a.attname
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.contype = 'f' AND c.confdeltype IN ('c', 'n')
              AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])
            ORDER BY 1
        """)).scalars().all()
    # Subscribers are never deleted (they unsubscribe), so deliveries need no index for it.
    assert unindexed == ["deliveries.subscriber_id"]
