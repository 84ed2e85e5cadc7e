"""Small builders for test data (real rows in the test database)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text

from webapp.extensions import db


def add_orders(app, rows: list[tuple[str, str, str, int, str]]) -> None:
    """Insert orders given as (customer name, ISO timestamp, status, items, total)."""
    with app.app_context():
        for i, (name, at, status, items, total) in enumerate(rows, start=1):
            db.session.execute(
                text("INSERT INTO customers (id, name, email, country) VALUES (:id, :name, :email, 'DE')"),
                {"id": i, "name": name, "email": f"c{i}@example.com"},
            )
            db.session.execute(
                text("INSERT INTO orders (id, customer_id, created_at, status, items, total, currency) "
                     "VALUES (:id, :id, :at, :status, :items, :total, 'EUR')"),
                {"id": i, "at": datetime.fromisoformat(at).replace(tzinfo=UTC), "status": status,
                 "items": items, "total": Decimal(total)},
            )
        db.session.commit()


def seed_many_orders(app, count: int) -> None:
    """Insert ``count`` generated orders (demo data generator, small)."""
    from webapp.demo_data import seed_demo_data

    with app.app_context():
        seed_demo_data(orders=count, subscribers=0, customers=min(count, 500), days=30)
