"""rq-dashboard at /rq, behind our own admin login.

rq-dashboard has no authentication and its POST endpoints (delete, requeue, empty)
carry no CSRF token, so every one of its requests is checked here: logged in,
admin, and for anything but GET a same-origin Origin/Referer.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

import rq.job
import rq_dashboard
from flask import Flask, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from redis.exceptions import RedisError
from rq.serializers import JSONSerializer

from webapp import redis_client
from webapp.extensions import csrf
from webapp.kinds import QUEUES

# rq-dashboard endpoints that change state even on GET.
STATE_CHANGING_GETS = {"rq_dashboard.requeue_all"}
# What rq-dashboard's URLs may hold; anything else crashes its views (an unknown registry, page 0, "x").
REGISTRIES = {"queued", "failed", "deferred", "started", "finished", "scheduled", "canceled"}
ORDERS = {"asc", "dsc"}
MAX_PAGE = 1_000_000
MAX_ID_LENGTH = 200


def _same_origin() -> bool:
    """True when the request's Origin (or Referer) is this site: same scheme, host and port."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    parts = urlsplit(source)
    return f"{parts.scheme}://{parts.netloc}".lower() == request.host_url.rstrip("/").lower()


def _url_is_sane() -> bool:
    """True when the URL's parts are ones rq-dashboard can serve (a 404 is ours to give otherwise)."""
    args = request.view_args or {}
    if args.get("instance_number", 0) != 0 or args.get("queue_name", QUEUES[0]) not in QUEUES:
        return False
    if args.get("registry_name", "queued") not in REGISTRIES or args.get("order", "asc") not in ORDERS:
        return False
    for name in ("per_page", "page"):
        value = str(args.get(name, "1"))
        if not (value.isdecimal() and 1 <= int(value) <= MAX_PAGE):
            return False
    return len(str(args.get("job_id", ""))) <= MAX_ID_LENGTH


def guard_dashboard():
    """Admins only; state-changing requests must come from our own pages."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path))
    if not current_user.is_admin:
        abort(403, "rq-dashboard is for administrators.")
    changes_state = request.method not in ("GET", "HEAD", "OPTIONS") or request.endpoint in STATE_CHANGING_GETS
    if changes_state and not _same_origin():
        abort(403, "Cross-site request refused.")
    if not _url_is_sane():
        abort(404, "Nothing to show at this address.")
    try:
        current_app.redis_conn.ping()
    except RedisError:
        return render_template(
            "errors/error.html", code=503, title="Queue unreachable",
            message="Redis is not reachable right now, so the queue dashboard cannot load. Jobs are safe in the "
            "database and will be handed over when it is back.",
        ), 503
    return None


def _json_by_default(cls: type) -> type:
    """A subclass of the RQ class ``cls`` whose serializer is ours unless one is named."""

    def __init__(self, *args, **kwargs):
        kwargs["serializer"] = kwargs.get("serializer") or JSONSerializer
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__doc__": f"{cls.__name__}, speaking JSON."})


# What rq-dashboard builds without naming a serializer (registry views, job pages, requeue):
# with RQ's default it would rewrite our jobs in pickle, which our workers cannot read.
JSON_DEFAULT_NAMES = ("Queue", "Worker", "Job", "CanceledJobRegistry", "DeferredJobRegistry", "FailedJobRegistry",
                      "FinishedJobRegistry", "ScheduledJobRegistry", "StartedJobRegistry")


def speak_json(module) -> None:
    """Make every RQ object rq-dashboard's ``module`` creates use our JSON serializer."""
    for name in JSON_DEFAULT_NAMES:
        current = getattr(module, name)
        if current.__doc__ != f"{name}, speaking JSON.":
            setattr(module, name, _json_by_default(current))
    module.requeue_job = functools.partial(rq.job.requeue_job, serializer=JSONSerializer)


def _dashboard_client(url: str, **_ignored):
    """rq-dashboard's ``from_url`` hook: (sentinel, client), the client from our factory."""
    return None, redis_client.shared(url)


def mount(app: Flask) -> None:
    """Register rq-dashboard at /rq with our JSON serializer and guard."""
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", app.config["REDIS_URL"])
    rq_dashboard.web.config.serializer = JSONSerializer
    speak_json(rq_dashboard.web)
    # rq-dashboard builds its Redis clients itself (at set-up and per request): hand it ours,
    # so rediss:// with a self-signed certificate works here as everywhere else.
    rq_dashboard.web.from_url = _dashboard_client
    rq_dashboard.web.setup_rq_connection(app)
    blueprint = rq_dashboard.blueprint
    if guard_dashboard not in blueprint.before_request_funcs.get(None, []):
        # before_request funcs run in order; ours must come before rq-dashboard's own.
        blueprint.before_request_funcs.setdefault(None, []).insert(0, guard_dashboard)
    csrf.exempt(blueprint)
    app.register_blueprint(blueprint, url_prefix="/rq")
