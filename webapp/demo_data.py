"""Demo data: customers, 100,000 orders and 10,000 subscribers, generated inside PostgreSQL.

Generated with set-based SQL (generate_series), so seeding takes seconds. Names
include accented Latin, Greek and Cyrillic, and a few hostile ones (a formula, a
script tag) so exports, reports and e-mails are seen handling them.
"""

from __future__ import annotations

from sqlalchemy import func, select, text

from webapp.extensions import db
from webapp.models import Order, Subscriber

FIRST = ["Anna", "Björn", "Chloé", "Dmitri", "Élodie", "François", "Γιώργος", "Hana", "Ingrid", "José",
         "Kateřina", "Łukasz", "Мария", "Nikolaj", "Øystein", "Paweł", "Quentin", "Renée", "Søren", "Tomás",
         "Ülkü", "Václav", "Wojciech", "Xavier", "Yağmur", "Zoë", "Ελένη", "Иван", "Ольга", "Νίκος"]
LAST = ["Andersson", "Brontë", "Castillo", "Dvořák", "Eriksen", "Fernández", "Γεωργίου", "Höglund",
        "Ivanović", "Jørgensen", "Kowalski", "López", "Müller", "Novák", "O'Brien", "Petrović", "Quiñones",
        "Rossi", "Schröder", "Томпсон", "Urbańska", "Van der Berg", "Wiśniewski", "Xu", "Young", "Żukowski",
        "Παπαδόπουλος", "Смирнов", "Kuznetsova", "Nguyễn"]
HOSTILE = ["=HYPERLINK(\"http://evil.example\",\"click\")", "<script>alert('x')</script>", "+1-555-0100 Ltd",
           "@admin", "-minus Corp"]


def seed_demo_data(orders: int = 100_000, subscribers: int = 10_000, customers: int = 5_000,
                   days: int = 730) -> dict[str, int]:
    """Fill empty orders/subscribers tables; do nothing where data exists. Returns what was added."""
    added = {"customers": 0, "orders": 0, "subscribers": 0}
    if not db.session.scalar(select(func.count()).select_from(Order)):
        db.session.execute(
            text("""
                INSERT INTO customers (id, name, email, country)
                SELECT g,
                       CASE WHEN g <= :nh THEN (:hostile)[g]
                            ELSE (:first)[1 + (g * 7) % :nf] || ' ' || (:last)[1 + (g * 13) % :nl] END,
                       'customer' || g || '@example.com',
                       (ARRAY['DE','FR','GR','RU','PL','SE','ES','IT','GB','US'])[1 + g % 10]
                FROM generate_series(1, :n) AS g
            """),
            {"n": customers, "first": FIRST, "last": LAST, "nf": len(FIRST), "nl": len(LAST),
             "hostile": HOSTILE, "nh": len(HOSTILE)},
        )
        db.session.execute(
            text("""
                INSERT INTO orders (id, customer_id, created_at, status, items, total, currency)
                SELECT g,
                       1 + (g::bigint * 7919) % :c,
                       now() - make_interval(secs => ((g::bigint * 104729) % (:days * 86400))),
                       (ARRAY['paid','paid','paid','shipped','shipped','pending','cancelled','refunded'])[1 + g % 8],
                       1 + g % 9,
                       round((5 + ((g::bigint * 31337) % 50000) / 100.0)::numeric, 2),
                       'EUR'
                FROM generate_series(1, :n) AS g
            """),
            {"n": orders, "c": customers, "days": days},
        )
        for table in ("customers", "orders"):
            db.session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                    f"(SELECT max(id) FROM {table}))"))
        added["customers"], added["orders"] = customers, orders
    if not db.session.scalar(select(func.count()).select_from(Subscriber)):
        db.session.execute(
            text("""
                INSERT INTO subscribers (email, name, active, created_at)
                SELECT 'subscriber' || g || '@example.com',
                       (:first)[1 + (g * 11) % :nf] || ' ' || (:last)[1 + (g * 17) % :nl],
                       true, now()
                FROM generate_series(1, :n) AS g
            """),
            {"n": subscribers, "first": FIRST, "last": LAST, "nf": len(FIRST), "nl": len(LAST)},
        )
        added["subscribers"] = subscribers
    db.session.execute(text("ANALYZE orders; ANALYZE customers; ANALYZE subscribers"))
    db.session.commit()
    return added
