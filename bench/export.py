"""CSV export: Backhaul's COPY-based job against loading ORM objects into a list, 10k / 100k / 1M rows."""

from __future__ import annotations

import csv
import time
import uuid

from bench import env
from bench.measure import measure


def backhaul_export(job_id: str) -> dict:
    """Run the real export job (runtime, COPY, progress, storage) once in this process."""
    from jobs.export_orders import export_orders_csv
    from webapp.extensions import db
    from webapp.models import Job

    application = env.app()
    with application.app_context():
        db.session.execute(db.update(Job).where(Job.id == uuid.UUID(job_id))
                           .values(rq_job_id=f"{job_id}_local", status="queued", attempts=0))
        db.session.commit()
        started = time.perf_counter()
        result = export_orders_csv(job_id)
        return {"rows": result.get("rows"), "seconds": time.perf_counter() - started}


def naive_export(path: str) -> dict:
    """The 'before': every order as an ORM object in a list, with its customer, then csv.writer."""
    from sqlalchemy.orm import joinedload

    from webapp.extensions import db
    from webapp.models import Order

    application = env.app()
    with application.app_context():
        started = time.perf_counter()
        orders = db.session.scalars(
            db.select(Order).options(joinedload(Order.customer)).order_by(Order.created_at)
        ).all()
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            for o in orders:
                writer.writerow([o.id, o.created_at.isoformat(), o.status, o.customer.name, o.customer.email,
                                 o.items, o.total, o.currency])
        return {"rows": len(orders), "seconds": time.perf_counter() - started}


def run(quick: bool = False) -> list[dict]:
    """Both variants at each size, in one run."""
    from webapp import queueing

    application = env.app()
    owner = env.bench_user(application)
    sizes = [2_000] if quick else [10_000, 100_000, 1_000_000]
    rows = []
    for size in sizes:
        env.reset_orders(application, size)
        with application.app_context():
            job_id = str(queueing.submit("export_orders", owner, {"date_from": "2000-01-01",
                                                                  "date_to": "2099-12-31", "status": None},
                                         f"bench {size}").id)
        ours = measure("bench.export:backhaul_export", job_id, repeat=1 if quick else 3)
        rows.append({"benchmark": "CSV export", "variant": "backhaul (COPY, streamed)", "size": f"{size:,} rows",
                     **ours})
        if size <= 100_000:
            naive = measure("bench.export:naive_export", "/tmp/backhaul-naive.csv", repeat=1 if quick else 3)
            rows.append({"benchmark": "CSV export", "variant": "naive (ORM list)", "size": f"{size:,} rows", **naive})
    return rows
