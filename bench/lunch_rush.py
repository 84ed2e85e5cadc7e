"""The lunch rush (everyone exports at 12:15) and submit saturation, against gunicorn on loopback.

Lunch rush: users arrive spread over a window; each logs in, submits an export (half of
them a half-year PDF report instead) and polls
its job until the download is there, while other requests load an ordinary page at a
steady open-loop rate (scheduled by the clock, not by replies). Then the same users do
the export inline in the request, on the benchmark-only app. Saturation: 50 concurrent
connections (wrk) post submits for a few seconds to a bare insert-then-enqueue route and
to the real export form (login, CSRF, redirect).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

from bench import CannotMeasure, env

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Session:
    """A tiny cookie-keeping HTTP client (one connection per request, like gunicorn's sync workers)."""

    def __init__(self, port: int, timeout: float = 30) -> None:
        self.port, self.timeout, self.cookie = port, timeout, ""

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str, dict, float]:
        """Send one request; returns status, body, headers and seconds taken."""
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            conn.close()
        seconds = time.perf_counter() - started
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return response.status, text, dict(response.getheaders()), seconds

    def login(self) -> str:
        """Log in as the benchmark user; return a CSRF token for later forms."""
        _s, page, _h, _t = self.request("GET", "/login")
        token = TOKEN.search(page).group(1)
        self.request("POST", "/login", {"email": "bench@example.com", "password": "bench-password",
                                        "csrf_token": token})
        _s, page, _h, _t = self.request("GET", "/exports/new")
        return TOKEN.search(page).group(1)


def start_web(port: int, app_path: str, timeout: float = 90) -> subprocess.Popen:
    """gunicorn with 4 sync workers, returned once it answers GET /healthz with 200.

    Not a TCP connect: gunicorn's master listens before its workers have booted the app,
    and a load generator started then measures a server that is not there yet.
    """
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", app_path, "--bind", f"127.0.0.1:{port}",
                             "--workers", "4", "--timeout", "120", "--log-level", "warning"],
                            cwd=env.ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(port, timeout, proc)
    except (RuntimeError, CannotMeasure):
        proc.terminate()
        proc.wait(30)
        raise
    return proc


def wait_until_ready(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until GET /healthz answers 200 several times in a row (every gunicorn worker has booted)."""
    deadline = time.monotonic() + timeout
    good = 0
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            status = None
        good = good + 1 if status == 200 else 0
        if good >= 8:
            return
        time.sleep(0.05 if status == 200 else 0.2)
    raise CannotMeasure(f"gunicorn did not answer /healthz within {timeout:.0f} s")


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def rush(port: int, users: int, window: float, inline: bool, page_rate: float) -> dict:
    """Run the scenario once; returns latency lists and counts."""
    stats = {"submit": [], "poll": [], "page": [], "export to file": [], "report to file": [], "errors": 0,
             "timeouts": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def record(kind: str, seconds: float) -> None:
        with lock:
            stats[kind].append(seconds)

    def fail(exc: Exception) -> None:
        with lock:
            stats["timeouts" if isinstance(exc, TimeoutError | socket.timeout) else "errors"] += 1

    def user(n: int) -> None:
        time.sleep(window * n / users)
        try:
            session = Session(port)
            token = session.login()
            started = time.perf_counter()
            # Half the users export orders, half build a half-year PDF report (the heavy one).
            report = n % 2 == 1
            if inline:
                status, _b, _h, seconds = session.request("POST", "/inline/report" if report else "/inline/export")
                record("submit", seconds)
                if status != 200:
                    raise RuntimeError(status)
                record("report to file" if report else "export to file", time.perf_counter() - started)
                return
            today = date.today()
            if report:
                status, _b, headers, seconds = session.request("POST", "/reports/new", {
                    "date_from": (today - timedelta(days=env.LUNCH_REPORT_DAYS)).isoformat(), "date_to": today.isoformat(),
                    "status": "", "customer": "", "recipients": "", "csrf_token": token})
            else:
                status, _b, headers, seconds = session.request("POST", "/exports/new", {
                    "date_from": "2020-01-01", "date_to": "2029-12-31", "status": "", "csrf_token": token})
            record("submit", seconds)
            if status != 303:
                raise RuntimeError(status)
            job_path = urllib.parse.urlsplit(headers["Location"]).path
            while True:
                time.sleep(1)
                status, body, _h, seconds = session.request("GET", f"{job_path}/status")
                record("poll", seconds)
                if status == 286:
                    if "Download" not in body:
                        raise RuntimeError("finished without a file")
                    record("report to file" if report else "export to file", time.perf_counter() - started)
                    return
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            print(f"lunch rush user {n}: {type(exc).__name__}: {exc}", file=sys.stderr)
            fail(exc)

    def pages() -> None:
        session = Session(port, timeout=10)
        session.login()
        interval = 1 / page_rate
        next_at = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            while not stop.is_set():
                next_at += interval
                pool.submit(load_page, Session.__new__(Session), session.cookie)
                time.sleep(max(0, next_at - time.perf_counter()))

    def load_page(reader: Session, cookie: str) -> None:
        reader.port, reader.timeout, reader.cookie = port, 10, cookie
        try:
            status, _b, _h, seconds = reader.request("GET", "/jobs/?kind=selftest")
            if status != 200:
                raise RuntimeError(status)
            record("page", seconds)
        except Exception as exc:  # noqa: BLE001
            fail(exc)

    background = threading.Thread(target=pages, daemon=True)
    background.start()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    stop.set()
    background.join(15)
    return stats


def summarise(mode: str, stats: dict) -> list[dict]:
    """Rows for the table."""
    rows = []
    for kind in ("submit", "poll", "page"):
        values = stats[kind]
        if values:
            rows.append({"benchmark": "Lunch rush", "variant": f"{mode}: {kind}", "size": f"{len(values)} requests",
                         "p50_ms": pct(values, 50), "p99_ms": pct(values, 99),
                         "note": f"{stats['errors']} errors, {stats['timeouts']} timeouts (whole run)"})
    for kind, what in (("export to file", "an export"), ("report to file", "a half-year report")):
        if stats[kind]:
            rows.append({"benchmark": "Lunch rush", "variant": f"{mode}: time until the user has {what}",
                         "size": f"{len(stats[kind])} users", "p50_ms": pct(stats[kind], 50),
                         "p99_ms": pct(stats[kind], 99),
                         "note": "" if mode == "inline" else "the job page polls every 1 s"})
    return rows


# wrk sends the same POST on every connection; the session cookie and CSRF token come from
# a real login first, so the product's route does everything it does for a browser.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local cookie = os.getenv("BENCH_COOKIE")
if cookie ~= "" then wrk.headers["Cookie"] = cookie end
"""
WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
WRK_BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def saturate(port: int, seconds: float, clients: int, real: bool) -> dict:
    """wrk (a C load generator, its own process) posting submits on ``clients`` connections for ``seconds``.

    A Python client on the same two cores measured itself as much as the server; wrk
    costs little CPU, so the numbers are the server's.
    """
    if real:
        session = Session(port)
        try:
            token = session.login()
        except (OSError, AttributeError) as exc:  # a server too busy to log in is not measured
            print(f"saturation: could not log in: {exc}", file=sys.stderr)
            return {"rate": 0.0, "p99_ms": None, "errors": 1}
        path, cookie = "/exports/new", session.cookie
        body = urllib.parse.urlencode({"date_from": "1990-01-01", "date_to": "1990-01-02", "status": "",
                                       "csrf_token": token})
    else:
        path, cookie, body = "/bare/submit", "", ""
    script = env.ROOT / "bench" / "results" / ".submit.lua"
    script.write_text(WRK_SCRIPT)
    try:
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds:g}s", "--latency", "-s", str(script),
             f"http://127.0.0.1:{port}{path}"],
            env={**os.environ, "BENCH_BODY": body, "BENCH_COOKIE": cookie}, capture_output=True, text=True,
            check=True, timeout=seconds + 60,
        ).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"wrk did not finish: {exc}", file=sys.stderr)
        out = ""
    finally:
        script.unlink(missing_ok=True)
    rate, p99 = WRK_RATE.search(out), WRK_P99.search(out)
    sockets = WRK_SOCKET.search(out)
    bad = WRK_BAD.search(out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(n) for n in sockets.groups()) if sockets else 0)
    return {"rate": float(rate.group(1)) if rate else 0.0,
            "p99_ms": float(p99.group(1)) * UNIT_MS[p99.group(2)] if p99 else None, "errors": errors}


def saturation(port: int, quick: bool) -> list[dict]:
    """The bare route and the real submit, alternated a few times; each row is the median run by rate.

    A run that served nothing (the machine too busy, the server not answering) is not a
    measurement: the rows then say so instead of dividing by it.
    """
    duration, rounds = (3, 1) if quick else (10, 3)
    runs: dict[str, list[dict]] = {"bare": [], "real": []}
    for _ in range(rounds):
        runs["bare"].append(saturate(port, duration, 50, real=False))
        runs["real"].append(saturate(port, duration, 50, real=True))
    bare, real = (sorted(runs[mode], key=lambda r: r["rate"])[len(runs[mode]) // 2] for mode in ("bare", "real"))
    spread = {mode: f"{min(r['rate'] for r in runs[mode]):.0f}–{max(r['rate'] for r in runs[mode]):.0f}/s"
              for mode in runs}
    size = f"{rounds} x {duration} s"
    rows = []
    for mode, variant, run_ in (("bare", "bare insert-then-enqueue route", bare),
                                ("real", "backhaul export submit (login, CSRF)", real)):
        errors = sum(r["errors"] for r in runs[mode])
        if run_["rate"] <= 0:
            rows.append({"benchmark": "Saturation (50 connections)", "variant": variant, "size": size,
                         "note": f"could not measure: no request completed ({errors} errors)"})
            continue
        note = f"{errors} errors; runs {spread[mode]}"
        if mode == "real":
            share = f"{real['rate'] / bare['rate'] * 100:.0f}% of bare" if bare["rate"] > 0 else "bare not measured"
            note += f"; {share}; wrk on the same 2 cores"
        rows.append({"benchmark": "Saturation (50 connections)", "variant": variant, "size": size,
                     "rate": run_["rate"], "p99_ms": run_["p99_ms"], "note": note})
    return rows


def run(quick: bool = False) -> list[dict]:
    """Lunch rush with Backhaul and inline, then saturation, in one run."""
    application = env.app()
    env.bench_user(application)
    env.reset_orders(application, 5_000 if quick else 100_000)
    users, window, rate = (5, 5.0, 5.0) if quick else (50, 60.0, 20.0)
    rows: list[dict] = []
    port = free_port()
    web = start_web(port, "bench.inline_app:app")
    workers = [subprocess.Popen([sys.executable, str(env.ROOT / "worker.py"), "--no-reconciler"], cwd=env.ROOT,
                                env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True) for _ in range(2)]
    try:
        env.wait_for_workers(2)
        backhaul = rush(port, users, window, inline=False, page_rate=rate)
        rows += summarise("backhaul", backhaul)
        for proc in workers:
            proc.terminate()
            proc.wait(60)
        workers = []
        inline = rush(port, users, window, inline=True, page_rate=rate)
        rows += summarise("inline", inline)
        ours_page, inline_page = pct(backhaul["page"], 99), pct(inline["page"], 99)
        if ours_page and inline_page:
            rows.append({"benchmark": "Lunch rush", "variant": "page-load p99, inline / backhaul",
                         "size": "ratio", "note": f"{inline_page / ours_page:.1f}x"})
        # Saturation gets a fresh web server: the inline rush has just built reports inside these
        # processes, which the product's web processes never do (measured on them in one run,
        # the real route lost 5% and the bare route 1%).
        web.terminate()
        web.wait(30)
        web = start_web(port, "bench.inline_app:app")
        rows += saturation(port, quick)
    finally:
        for proc in workers:
            proc.terminate()
        web.terminate()
        web.wait(30)
    return rows
