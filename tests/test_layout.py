"""The process layout that `make run`, the Procfile and docker-compose start: interactive work never waits for bulk work."""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
from redis import Redis
from rq import Worker
from sqlalchemy import func, select, text

from tests.conftest import ROOT, wait_for
from webapp import queue_classes, queueing
from webapp.extensions import db
from webapp.models import Delivery, Job, Photo

LAYOUT = {"interactive": 1, "bulk": 2, "bulk_cpu": 1}


def procfile_worker_args(procfile: str = "Procfile.dev") -> tuple[str, ...]:
    """The arguments `make run` gives worker.py: read from the Procfile's worker line, not repeated here."""
    for line in (ROOT / procfile).read_text().splitlines():
        if line.startswith("worker:"):
            words = shlex.split(line.split(":", 1)[1])
            return tuple(words[words.index("worker.py") + 1:])
    raise AssertionError(f"{procfile} has no worker line")


def start_layout(start_worker, test_env, **env: str):
    """Start the workers the way `make run` does and wait until every one of them takes work."""
    layout = start_worker(args=procfile_worker_args(), env=env)
    expected = sum(queue_classes.layout_counts(env).values())
    redis = Redis.from_url(test_env["REDIS_URL"])
    wait_for(lambda: Worker.count(connection=redis) == expected, timeout=60, message=f"{expected} workers")
    return layout


def job_row(app, job_id) -> Job:
    """The job row, fresh from the database."""
    with app.app_context():
        job = db.session.get(Job, job_id)
        db.session.expunge(job)
        return job


def test_every_process_file_starts_the_same_layout():
    """make run, the Procfile and docker-compose all start `worker.py --layout`, whose knobs are WORKERS_<CLASS>."""
    assert procfile_worker_args("Procfile.dev") == procfile_worker_args("Procfile") == ("--layout",)
    assert "exec python worker.py --layout" in (ROOT / "docker-compose.yml").read_text()
    assert queue_classes.layout_counts({}) == LAYOUT
    assert queue_classes.layout_counts({"WORKERS_BULK": "5", "WORKERS_BULK_CPU": "0"})["bulk"] == 5
    with pytest.raises(ValueError, match="WORKERS_BULK"):
        queue_classes.layout_counts({"WORKERS_BULK": "two"})
    interactive = queue_classes.BY_NAME["interactive"]
    assert not set(interactive.serves) & {"bulk", "bulk_cpu"}, "interactive processes never take bulk work"


def test_a_mistyped_knob_stops_the_layout_with_its_name(test_env):
    """WORKERS_BULK=two: the layout refuses to start and says which setting is wrong."""
    result = subprocess.run([sys.executable, str(ROOT / "worker.py"), *procfile_worker_args(), "--no-nice"],
                            env={**os.environ, "WORKERS_BULK": "two"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "WORKERS_BULK must be a whole number, not 'two'" in result.stderr


def test_the_layout_serves_each_class_restarts_a_dead_process_and_stops_without_orphans(app, start_worker, test_env):
    """1 interactive, 2 bulk and 1 bulk-CPU process; kill one and another takes its place; SIGTERM stops them all."""
    layout = start_layout(start_worker, test_env)
    redis = Redis.from_url(test_env["REDIS_URL"])
    workers = Worker.all(connection=redis)
    firsts = sorted(w.queue_names()[0] for w in workers)
    assert firsts == ["bulk", "bulk", "bulk_cpu", "fast"]
    interactive = next(w for w in workers if w.queue_names()[0] == "fast")
    assert interactive.queue_names() == ["fast", "default", "cpu"]
    os.kill(interactive.pid, signal.SIGKILL)
    wait_for(lambda: any(w.queue_names()[0] == "fast" and w.pid != interactive.pid
                         for w in Worker.all(connection=redis)), timeout=60, message="a new interactive worker")
    pids = [w.pid for w in Worker.all(connection=redis) if w.pid != interactive.pid]
    assert layout.stop() == 0
    for pid in pids:
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=30,
                 message=f"worker {pid} to end with the layout")


def _zombie(pid: int) -> bool:
    """True when ``pid`` has ended and only awaits its parent."""
    try:
        return open(f"/proc/{pid}/stat").read().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def test_an_export_finishes_long_before_a_bulk_send_that_was_already_sending(app, as_alice, start_worker,
                                                                               test_env, mailbox):
    """3,000 messages going out; an export submitted meanwhile is done while most of them still wait."""
    total = 3000
    with app.app_context():
        db.session.execute(text("INSERT INTO subscribers (email, name, active, created_at) SELECT 'sub' || g || "
                                "'@example.com', 'Reader ' || g, true, now() FROM generate_series(1, :n) g"),
                           {"n": total})
        db.session.commit()
    mailbox.delay = 0.003  # a mail server a few milliseconds away, so the send lasts long enough to watch
    start_layout(start_worker, test_env)
    response = as_alice.post("/newsletters/new", {"subject": "Bulk", "body_format": "markdown",
                                                  "body": "Hello {{ name }}"}, form_page="/newsletters/new")
    newsletter_id = int(response.headers["Location"].rstrip("/").rsplit("/", 1)[-1])
    assert as_alice.post(f"/newsletters/{newsletter_id}/send",
                         form_page=f"/newsletters/{newsletter_id}").status_code == 303
    send_started = time.monotonic()
    wait_for(lambda: mailbox.count >= 100, timeout=60, every=0.05, message="the send to be under way")

    response = as_alice.post("/exports/new", {"date_from": "2026-01-01", "date_to": "2026-12-31", "status": ""},
                             form_page="/exports/new")
    export_id = response.headers["Location"].rsplit("/", 1)[-1]
    submitted = time.monotonic()
    export = wait_for(lambda: (j := job_row(app, export_id)).status == "succeeded" and j, timeout=60, every=0.05,
                      message="the export")
    export_seconds = time.monotonic() - submitted
    delivered_then = mailbox.count
    assert export.queue == "default"

    def sent() -> int:
        with app.app_context():
            return db.session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent"))

    wait_for(lambda: sent() == total, timeout=300, every=0.2, message="the whole send")
    send_seconds = time.monotonic() - send_started
    assert delivered_then < total * 0.75, f"the export waited for the send ({delivered_then} of {total} out)"
    assert export_seconds < send_seconds / 3, (export_seconds, send_seconds)
    assert sorted(mailbox.recipients) == sorted(f"sub{i}@example.com" for i in range(1, total + 1)), "each once"


def noisy_jpeg(size=(4000, 3000)) -> bytes:
    """A photo that takes real work to resize (noise does not compress away)."""
    out = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def test_a_single_photo_is_ready_while_a_big_upload_is_still_being_resized(app, as_alice, start_worker, test_env):
    """20 photos at once, then one more: the one is done long before the twenty."""
    photo = noisy_jpeg()
    start_layout(start_worker, test_env)
    batch = {"photos": [(io.BytesIO(photo), f"batch{i:02}.jpg") for i in range(20)]}
    assert as_alice.post("/photos/", batch, form_page="/photos/",
                         content_type="multipart/form-data").status_code == 303
    single = {"photos": [(io.BytesIO(photo), "single.jpg")]}
    assert as_alice.post("/photos/", single, form_page="/photos/",
                         content_type="multipart/form-data").status_code == 303

    def photo_jobs() -> dict[str, Job]:
        with app.app_context():
            rows = db.session.execute(select(Photo.filename, Job).join(Job, Job.id == Photo.job_id)).all()
            for _name, job in rows:
                db.session.expunge(job)
            return {name: job for name, job in rows}

    first = photo_jobs()
    assert first["single.jpg"].queue == "cpu", "a photo on its own is interactive work"
    assert sorted(j.queue for n, j in first.items() if n.startswith("batch")) == ["bulk_cpu"] * 17 + ["cpu"] * 3
    done = wait_for(lambda: (jobs := photo_jobs())["single.jpg"].status == "succeeded" and jobs, timeout=120,
                    every=0.05, message="the single photo")
    unfinished = [n for n, j in done.items() if n.startswith("batch") and j.status != "succeeded"]
    assert len(unfinished) >= 8, f"the single photo waited for the batch (only {len(unfinished)} left)"
    def all_done() -> dict[str, Job] | None:
        jobs = photo_jobs()
        return jobs if all(j.status == "succeeded" for j in jobs.values()) else None

    finished = wait_for(all_done, timeout=300, every=0.2, message="the whole upload")
    single = finished["single.jpg"]
    last = max(j.finished_at for j in finished.values())
    assert (single.finished_at - single.created_at) < (last - single.created_at) / 2


def test_a_queued_job_says_what_it_waits_behind(app, users, start_worker, test_env):
    """With the only interactive worker busy, the third export waits behind two exports and a running job."""
    from flask import render_template_string

    queue_classes.init_app(app)
    start_worker("fast", "default")
    redis = Redis.from_url(test_env["REDIS_URL"])
    wait_for(lambda: Worker.count(connection=redis) == 1, timeout=60, message="the worker")
    with app.app_context():
        busy = queueing.submit("selftest", users["alice"], {"seconds": 30}, "Busy").id
    wait_for(lambda: job_row(app, busy).status == "running", timeout=60, message="the worker to be busy")
    params = {"date_from": "2026-01-01", "date_to": "2026-12-31", "status": ""}
    with app.app_context():
        ids = [queueing.submit("export_orders", users["alice"], params, f"Export {i}").id for i in range(3)]
        third = db.session.get(Job, ids[2])
        waiting = queue_classes.waiting_for(third, queueing.redis_conn())
        assert waiting.ahead == 2
        assert waiting.text.startswith("Waiting behind 2 orders exports; starts in about "), waiting.text
        html = render_template_string('{% set step = job %}{% include "jobs/_waiting.html" %}', job=third)
        assert "Waiting behind 2 orders exports" in html and 'data-ahead="2"' in html
        first = db.session.get(Job, ids[0])
        assert queue_classes.waiting_for(first, queueing.redis_conn()).text.startswith(
            "Waiting for 1 running job to finish")
        queueing.cancel(busy)
        db.session.commit()


def test_bulk_work_nobody_takes_is_named_on_the_operations_view(app, users, start_worker, test_env):
    """Newsletter work queued with only an interactive worker running: the bulk class says to start one."""
    queue_classes.init_app(app)
    start_worker("--class", "interactive")
    redis = Redis.from_url(test_env["REDIS_URL"])
    wait_for(lambda: Worker.count(connection=redis) == 1, timeout=60, message="the worker")
    with app.app_context():
        from webapp.models import Newsletter

        newsletter = Newsletter(owner_id=users["alice"], subject="S", body="B", body_format="markdown")
        db.session.add(newsletter)
        db.session.commit()
        job = queueing.submit("send_newsletter", users["alice"], {"newsletter_id": newsletter.id}, "S")
        backlogs = {b.worker_class.name: b for b in queue_classes.class_backlogs(queueing.redis_conn())}
        assert backlogs["bulk"].waiting == 1 and backlogs["bulk"].workers == 0
        assert "start one (WORKERS_BULK)" in backlogs["bulk"].hint
        assert backlogs["interactive"].hint is None and backlogs["interactive"].workers == 1
        from flask import render_template

        html = render_template("ops/_classes.html")
        assert "Bulk work" in html and "start one (WORKERS_BULK)" in html
        waiting = queue_classes.waiting_for(db.session.get(Job, job.id), queueing.redis_conn())
        assert waiting.text.startswith("No worker is taking bulk work right now")


def test_a_report_email_waiting_for_its_report_says_so(app, users):
    """The e-mail of a report still being built waits for the report, whatever its queue holds."""
    with app.app_context():
        params = {"date_from": "2026-01-01", "date_to": "2026-12-31", "status": "", "customer": ""}
        report = queueing.submit("sales_report", users["alice"], params, "Report")
        mail = queueing.submit("mail_report", users["alice"], {"report_job_id": str(report.id), "recipients": []},
                               "Mail", depends_on=report)
        waiting = queue_classes.waiting_for(db.session.get(Job, mail.id), queueing.redis_conn())
        assert waiting.text == "Starts when the sales report it belongs to has finished."
