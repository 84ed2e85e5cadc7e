"""Interactive latency under bulk: exports submitted while a 10,000-message newsletter and 50 photos are in flight.

Everything as ``make run`` runs it: gunicorn with 4 workers, the dev mail sink
(``scripts/mail_sink.py`` writing .eml files) and the workers of Procfile.dev's worker
line (``worker.py --layout``). Against it, the old layout: one worker that takes
newsletter work first, then exports, then photos (what a single ``python worker.py``
did before the queue classes). Export latency is submit to succeeded, from the rows.
Workers run at normal CPU priority here (``--no-nice``): with their usual nice 19, anything
else running on the machine would decide the result.
"""

from __future__ import annotations

import http.client
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

from bench import env
from bench.lunch_rush import TOKEN, Session, free_port, pct, start_web
from bench.photos import make_photo

PHOTO_UPLOADS = (20, 20, 10)  # 50 photos in three uploads (PHOTO_MAX_FILES is 20)
EXPORT_EVERY_SECONDS = 3.0  # quick: every second, the first at once (its newsletter lasts a second or two)


def procfile_worker_args() -> list[str]:
    """worker.py's arguments on Procfile.dev's worker line: the processes `make run` starts."""
    for line in (env.ROOT / "Procfile.dev").read_text().splitlines():
        if line.startswith("worker:"):
            words = shlex.split(line.split(":", 1)[1])
            return words[words.index("worker.py") + 1:]
    raise RuntimeError("Procfile.dev has no worker line")


def tree_rss_mb(root: int) -> dict[int, float]:
    """Resident memory of ``root`` and every descendant, by pid, in MB."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[int(entry.name)] = next((int(line.split()[1]) / 1024 for line in status.splitlines()
                                     if line.startswith("VmRSS:")), 0.0)
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid and child not in tree]
        tree.update(children)
        frontier += children
    return {pid: rss.get(pid, 0.0) for pid in tree}


def cpu_seconds(pids) -> float:
    """CPU time used so far by these processes and the children they have reaped (work horses)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def post_photos(session: Session, port: int, token: str, photo: bytes, count: int) -> int:
    """Upload ``count`` copies of ``photo`` in one multipart form, as the browser's form does; the HTTP status."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'.encode()]
    for i in range(count):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="p{i:02}.jpg"\r\n'
                     "Content-Type: image/jpeg\r\n\r\n".encode() + photo + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/photos/", body, {"Cookie": session.cookie,
                                                 "Content-Type": f"multipart/form-data; boundary={boundary}"})
        return conn.getresponse().status
    finally:
        conn.close()


def start_sink(folder: str) -> tuple[subprocess.Popen, int]:
    """The dev mail sink as `make run` starts it, on a free port; returns once it greets."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "scripts/mail_sink.py", "--port", str(port), "--dir", folder],
                            cwd=env.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1) as sock:
                if sock.recv(64).startswith(b"220"):
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the mail sink did not start")


def reset(application, subscribers: int) -> int:
    """Empty jobs, photos and newsletters, seed ``subscribers``; the new newsletter's id."""
    from sqlalchemy import text

    from webapp.extensions import db
    from webapp.models import Newsletter

    with application.app_context():
        db.session.execute(text("TRUNCATE deliveries, newsletters, subscribers, photos, job_events, jobs "
                                "RESTART IDENTITY CASCADE"))
        db.session.execute(text("INSERT INTO subscribers (email, name, active, created_at) SELECT 's' || g || "
                                "'@example.com', 'Reader ' || g, true, now() FROM generate_series(1, :n) g"),
                           {"n": subscribers})
        newsletter = Newsletter(owner_id=env.bench_user(application), subject="Spring",
                                body="Hello {{ name }},\n\n" + "News. " * 330, body_format="markdown")
        db.session.add(newsletter)
        db.session.commit()
        return newsletter.id


def scenario(application, port: int, workers: list[list[str]], messages: int, photo: bytes,
             uploads: tuple[int, ...], sink_pid: int, quick: bool = False, exports_too: bool = True) -> dict:
    """Start ``workers``, send the newsletter, upload the photos, export every few seconds until the send is done."""
    from redis import Redis
    from sqlalchemy import func, select

    from webapp import queueing
    from webapp.extensions import db
    from webapp.models import Delivery, Job

    newsletter_id = reset(application, messages)
    Redis.from_url(env.REDIS_URL).flushdb()
    # BENCH_WORKER_LOG=path keeps the workers' output (to see where the time went).
    log = open(os.environ["BENCH_WORKER_LOG"], "ab") if os.environ.get("BENCH_WORKER_LOG") else subprocess.DEVNULL  # noqa: SIM115
    procs = [subprocess.Popen([sys.executable, str(env.ROOT / "worker.py"), *args], cwd=env.ROOT,
                              env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True) for args in workers]
    expected = sum(_process_count(args) for args in workers)
    env.wait_for_workers(expected)
    idle = {pid: mb for proc in procs for pid, mb in tree_rss_mb(proc.pid).items()}
    peak = {"total": sum(idle.values())}
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            peak["total"] = max(peak["total"], sum(sum(tree_rss_mb(p.pid).values()) for p in procs))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = cpu_seconds([pid for proc in procs for pid in tree_rss_mb(proc.pid)] + [sink_pid])
    session = Session(port, timeout=60)
    export_token = session.login()
    _s, page, _h, _t = session.request("GET", "/photos/")
    photo_token = TOKEN.search(page).group(1)
    owner = env.bench_user(application)
    exports: list[str] = []
    try:
        with application.app_context():
            started = queueing.submit("send_newsletter", owner, {"newsletter_id": newsletter_id}, "bench").created_at
        uploader = threading.Thread(target=lambda: [post_photos(session, port, photo_token, photo, n)
                                                    for n in uploads], daemon=True)
        uploader.start()
        deadline = time.monotonic() + 900
        every = 1.0 if quick else EXPORT_EVERY_SECONDS
        next_export = time.monotonic() + (0.0 if quick else 1.0)
        with application.app_context():
            while time.monotonic() < deadline:
                pending = db.session.scalar(select(func.count()).select_from(Delivery).where(
                    Delivery.newsletter_id == newsletter_id, Delivery.status != "sent"))
                total = db.session.scalar(select(func.count()).select_from(Delivery).where(
                    Delivery.newsletter_id == newsletter_id))
                db.session.commit()
                if total == messages and pending == 0:
                    break
                if exports_too and time.monotonic() >= next_export:
                    status, _b, headers, _t = session.request("POST", "/exports/new", {
                        "date_from": "2020-01-01", "date_to": "2029-12-31", "status": "", "csrf_token": export_token})
                    if status == 303:
                        exports.append(urllib.parse.urlsplit(headers["Location"]).path.rsplit("/", 1)[-1])
                    else:
                        print(f"interactive bench: export submit answered {status}", file=sys.stderr)
                    next_export += every
                time.sleep(0.1)
            uploader.join(300)
            # Every export and photo finishes (in the old layout they all wait for the newsletter).
            while time.monotonic() < deadline:
                left = db.session.scalar(select(func.count()).select_from(Job).where(
                    Job.status.in_(["queued", "running"])))
                db.session.commit()
                if not left:
                    break
                time.sleep(0.2)
            sent_last = db.session.scalar(select(func.max(Delivery.sent_at)).where(
                Delivery.newsletter_id == newsletter_id))
            rows = db.session.execute(select(Job.kind, Job.status, Job.created_at, Job.started_at,
                                             Job.finished_at)).all()
        cpu_used = cpu_seconds([pid for proc in procs for pid in tree_rss_mb(proc.pid)] + [sink_pid]) - cpu_before
    finally:
        stop_sampling.set()
        sampler.join(5)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    export_rows = [r for r in rows if r.kind == "export_orders"]
    photo_rows = [r for r in rows if r.kind == "resize_photo"]
    latencies = [(r.finished_at - r.created_at).total_seconds() for r in export_rows if r.status == "succeeded"]
    waits = [(r.started_at - r.created_at).total_seconds() for r in export_rows if r.status == "succeeded"]
    return {
        "newsletter_seconds": (sent_last - started).total_seconds() if sent_last else None,
        "exports": len(exports), "exports_ok": len(latencies), "latencies": latencies, "waits": waits,
        "photos_ok": sum(1 for r in photo_rows if r.status == "succeeded"), "photos": len(photo_rows),
        "photos_seconds": max(((r.finished_at - started).total_seconds() for r in photo_rows if r.finished_at),
                              default=None),
        "idle_rss": idle, "peak_rss_mb": peak["total"], "cpu_seconds": cpu_used,
    }


def _process_count(args: list[str]) -> int:
    """How many RQ workers these worker.py arguments start."""
    if "--layout" in args:
        from webapp.queue_classes import layout_counts

        return sum(layout_counts().values())
    return 1


def run(quick: bool = False) -> list[dict]:
    """The default layout and the old single worker, the same load on each."""
    application = env.app()
    env.bench_user(application)
    orders = 5_000 if quick else 100_000
    env.reset_orders(application, orders)
    messages = 300 if quick else 10_000
    uploads = (4, 2) if quick else PHOTO_UPLOADS
    width, height = (800, 600) if quick else (4000, 3000)
    scratch = Path(tempfile.mkdtemp(prefix="bench-interactive-"))
    photo = Path(make_photo(str(scratch / "photo.jpg"), width, height)).read_bytes()
    sink, sink_port = start_sink(str(scratch / "mail"))
    os.environ.update({"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(sink_port)})
    port = free_port()
    web = None
    layouts = (
        ("default layout (make run: worker.py " + " ".join(procfile_worker_args()) + ")", [procfile_worker_args()]),
        # Before the queue classes, newsletter batches sat on `fast`, which one worker served first.
        ("old layout: one worker, newsletter work first", [["bulk", "fast", "default", "cpu", "bulk_cpu"]]),
    )
    rows = []
    try:
        web = start_web(port, "wsgi:app")
        for name, workers in layouts:
            # --no-nice: on a machine shared with other work, nice 19 would measure that other work.
            flags = [[*w, "--no-reconciler", "--no-nice"] for w in workers]
            load = os.getloadavg()[0]
            result = scenario(application, port, flags, messages, photo, uploads, sink.pid, quick=quick)
            rows.append(_row(name, messages, sum(uploads), result, f"{width * height / 1e6:.0f} MP", orders, load))
            if quick:
                continue
            # The newsletter on its own, as a user of `make run` sends one.
            load = os.getloadavg()[0]
            alone = scenario(application, port, flags, messages, photo, (), sink.pid, quick=quick, exports_too=False)
            rows.append({"benchmark": "Interactive latency under bulk", "variant": f"{name}: the newsletter alone",
                         "size": f"{messages:,} messages", "seconds": alone["newsletter_seconds"],
                         "rate": messages / alone["newsletter_seconds"] if alone["newsletter_seconds"] else None,
                         "note": f"into the dev mail sink (.eml files); {alone['cpu_seconds']:.0f} CPU-s in workers "
                                 f"and sink (PostgreSQL not counted); load average {load:.1f} at the start"})
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        sink.terminate()
        sink.wait(30)
    return rows


def _row(name: str, messages: int, photos: int, result: dict, megapixels: str, orders: int, load: float) -> dict:
    """One table row; says so when there was nothing to measure."""
    latencies = result["latencies"]
    idle = result["idle_rss"]
    memory = (f"worker RSS idle {sum(idle.values()):.0f} MB in {len(idle)} processes "
              f"({', '.join(f'{mb:.0f}' for mb in sorted(idle.values(), reverse=True))}), "
              f"peak {result['peak_rss_mb']:.0f} MB; load average {load:.1f} at the start (2 cores)")
    newsletter = result["newsletter_seconds"]
    note = (f"newsletter {messages:,} messages in {newsletter:.1f} s; " if newsletter else "newsletter not finished; ")
    if result["waits"]:
        note += f"exports waited p50 {statistics.median(result['waits']):.1f} s, max {max(result['waits']):.1f} s; "
    note += (f"{result['photos_ok']}/{photos} photos ({megapixels}) "
             f"done after {result['photos_seconds'] or 0:.1f} s; {result['exports_ok']}/{result['exports']} exports; "
             + memory)
    row = {"benchmark": "Interactive latency under bulk", "variant": name,
           "size": f"{len(latencies)} exports of {orders:,} rows" if latencies else "no export measured",
           "peak_rss_mb": result["peak_rss_mb"], "note": note, "newsletter_seconds": newsletter}
    if latencies:
        row.update({"p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99),
                    "median_export_s": statistics.median(latencies)})
    else:
        row["note"] = "could not measure: no export was submitted while the newsletter was sending; " + note
    return row
