"""Newsletters: 10,000 messages to a local SMTP sink end to end with two workers, against one connection
per message; and how parallel batches scale when the SMTP server is 20 ms away."""

from __future__ import annotations

import os
import smtplib
import threading
import time

from bench import env


def _sink_env(port: int) -> None:
    """Point the app and the workers at the sink."""
    os.environ["MAIL_SERVER"] = "127.0.0.1"
    os.environ["MAIL_PORT"] = str(port)


def end_to_end(count: int, workers: int, batch_size: int) -> dict:
    """Seed subscribers, submit a send and time it until every delivery row is sent."""
    from sqlalchemy import func, select, text

    from scripts.mail_sink import MailSink
    from webapp import queueing
    from webapp.extensions import db
    from webapp.models import Delivery, Newsletter

    sink = MailSink().start()
    _sink_env(sink.port)
    os.environ["NEWSLETTER_BATCH_SIZE"] = str(batch_size)
    application = env.app()
    owner = env.bench_user(application)
    with application.app_context():
        db.session.execute(text("TRUNCATE deliveries, newsletters, subscribers RESTART IDENTITY CASCADE"))
        db.session.execute(text("INSERT INTO subscribers (email, name, active, created_at) SELECT 's' || g || "
                                "'@example.com', 'Reader ' || g, true, now() FROM generate_series(1, :n) g"),
                           {"n": count})
        # About 6 KB on the wire, like the anchor: a 2 KB body as text, as HTML, base64, headers.
        newsletter = Newsletter(owner_id=owner, subject="Bench", body="Hello {{ name }},\n\n" + "News. " * 330,
                                body_format="markdown")
        db.session.add(newsletter)
        db.session.commit()
        # Workers already running, as in production (a burst worker that starts before the
        # fan-out finds its queue empty and leaves); timed from the submit to the last mark.
        procs = [env.worker_process("bulk", burst=False) for _ in range(workers)]
        env.wait_for_workers(workers)
        started = time.perf_counter()
        queueing.submit("send_newsletter", owner, {"newsletter_id": newsletter.id}, "bench")
        deadline = started + 600
        while time.perf_counter() < deadline:
            time.sleep(0.05)
            pending = db.session.scalar(select(func.count()).select_from(Delivery)
                                        .where(Delivery.newsletter_id == newsletter.id, Delivery.status != "sent"))
            db.session.commit()
            if sink.count >= count and pending == 0:
                break
        seconds = time.perf_counter() - started
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        sent = db.session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent"))
    sink.stop()
    return {"seconds": seconds, "sent": sent, "received": sink.count, "bytes": len(sink.received[0].data)}


def one_connection_per_message(count: int) -> dict:
    """The naive loop: connect, send, quit, for every message."""
    from email.message import EmailMessage

    from scripts.mail_sink import MailSink

    sink = MailSink().start()
    body = "News. " * 1000
    started = time.perf_counter()
    for i in range(count):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "shop@example.com", f"s{i}@example.com", "Bench"
        msg.set_content(body)
        msg.add_alternative(f"<p>{body}</p>", subtype="html")
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            smtp.send_message(msg)
    seconds = time.perf_counter() - started
    sink.stop()
    return {"seconds": seconds, "received": count}


def parallel_over_delay(total: int, parallel: int, delay: float) -> dict:
    """send_batch over ``parallel`` connections through a proxy adding ``delay`` to every reply."""
    from flask import current_app

    from bench.smtp_delay_proxy import DelayProxy
    from jobs.smtp_delivery import build_message, send_batch
    from scripts.mail_sink import MailSink, free_port

    sink = MailSink().start()
    proxy = DelayProxy(free_port(), sink.port, delay).start()
    _sink_env(proxy.listen_port)
    application = env.app()
    per = total // parallel

    def one_batch(n: int) -> None:
        with application.app_context():
            from webapp.extensions import mail

            items = ((i, build_message(sender="shop@example.com", to_email=f"p{n}-{i}@example.com", to_name="",
                                       subject="Bench", html="<p>hi</p>", text="hi",
                                       unsubscribe_url="https://x/u", unsubscribe_post_url="https://x/u"))
                     for i in range(per))
            assert current_app
            send_batch(mail, items, on_sent=lambda _k: None, on_failed=lambda _k, _e: None)

    started = time.perf_counter()
    threads = [threading.Thread(target=one_batch, args=(n,)) for n in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    proxy.stop()
    sink.stop()
    return {"seconds": seconds, "received": per * parallel}


def run(quick: bool = False) -> list[dict]:
    """End to end with two workers, the naive loop, and parallel batches over a 20 ms link."""
    count = 300 if quick else 10_000
    rows = []
    ours = end_to_end(count, workers=2, batch_size=50 if quick else 200)
    rows.append({"benchmark": "Newsletter", "variant": "backhaul: 2 workers, batches, 1 connection each",
                 "size": f"{count:,} messages", "seconds": ours["seconds"], "runs": 1,
                 "rate": ours["received"] / ours["seconds"],
                 "note": f"{ours['received']:,} received ({ours['bytes'] / 1024:.1f} KB each), "
                         f"{ours['sent']:,} marked sent"})
    naive_count = 100 if quick else 2_000
    naive = one_connection_per_message(naive_count)
    rows.append({"benchmark": "Newsletter", "variant": "naive: one connection per message, in one loop",
                 "size": f"{naive_count:,} messages", "seconds": naive["seconds"], "runs": 1,
                 "rate": naive["received"] / naive["seconds"]})
    total = 40 if quick else 400
    for parallel in ([1, 4] if quick else [1, 2, 4, 8]):
        result = parallel_over_delay(total, parallel, 0.02)
        rows.append({"benchmark": "Newsletter over 20 ms link", "variant": f"{parallel} parallel batch(es)",
                     "size": f"{total} messages", "seconds": result["seconds"], "runs": 1,
                     "rate": result["received"] / result["seconds"]})
    return rows
