"""Lost database connections answer as a calm 503, never as a 500.

PostgreSQL can drop a connection at any moment (a failover, a restart, an operator
terminating backends). A query that hits a dead connection raises a DBAPIError whose
``connection_invalidated`` is set; the request then gets a 503 page that asks to try
again (the pool has already replaced the connection), and ending the request's session
never raises on a connection that is gone, which would turn a rendered page into a 500.
"""

from __future__ import annotations

import contextlib
import logging

from flask import Flask, render_template, request
from sqlalchemy.exc import DBAPIError

from webapp.extensions import db

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1


def discard_session() -> None:
    """End the request's session; if its connection is dead, invalidate it instead of rolling back."""
    try:
        db.session.remove()
    except DBAPIError:
        log.warning("database connection lost while ending a request; discarded", exc_info=True)
        with contextlib.suppress(Exception):
            db.session().invalidate()
        db.session.registry.clear()


def database_unavailable(exc: DBAPIError):
    """A 503 page (or fragment, for HTMX) for a query whose connection dropped; other errors go on as 500s."""
    if not exc.connection_invalidated:
        raise exc
    log.warning("database connection lost during %s %s: %s", request.method, request.path, exc.orig)
    discard_session()
    template = "errors/_error.html" if request.headers.get("HX-Request") else "errors/error.html"
    body = render_template(template, code=503, title="Please try again",
                           message="The database connection dropped for a moment. Nothing was lost; "
                           "reload the page or send the form again.")
    return body, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}


def register(app: Flask) -> None:
    """Install the 503 handler and a session clean-up that survives dead connections.

    Teardown functions run in reverse order of registration: this one, registered after
    Flask-SQLAlchemy's, ends the session first, so Flask-SQLAlchemy's own finds nothing to do.
    """
    app.register_error_handler(DBAPIError, database_unavailable)
    app.teardown_appcontext(lambda _exc: discard_session())
