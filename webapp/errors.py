"""Central error pages: a readable page (or fragment, for HTMX) for every error."""

from __future__ import annotations

import logging

from flask import Flask, render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from redis.exceptions import ResponseError
from rq.exceptions import DeserializationError, NoSuchJobError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webapp.extensions import db
from webapp.throttle import retry_after_seconds

log = logging.getLogger(__name__)


def _render(code: int, title: str, message: str):
    """Render the error template, as a fragment for HTMX requests."""
    template = "errors/_error.html" if request.headers.get("HX-Request") else "errors/error.html"
    return render_template(template, code=code, title=title, message=message), code


def register_errorhandlers(app: Flask) -> None:
    """Install handlers for HTTP errors, CSRF failures, oversized uploads and crashes."""

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge):
        """A body over the limit gets a page that names the limit, not a bare 413."""
        if request.endpoint == "photos.upload":
            message = (f"That upload is too large. Each photo may be up to {app.config['PHOTO_MAX_MB']} MB, "
                       f"and up to {app.config['PHOTO_MAX_FILES']} photos at once.")
        elif request.endpoint == "subscribers.import_csv":
            message = f"That file is too large: a subscriber import may be up to {app.config['IMPORT_MAX_MB']} MB."
        else:
            message = "That request is too large for this page."
        return _render(413, "Upload too large", message)

    @app.errorhandler(RateLimitExceeded)
    def throttled(exc: RateLimitExceeded):
        """Too many failed log-ins: say when to try again, in words and in Retry-After."""
        seconds = retry_after_seconds()
        minutes = max(1, round(seconds / 60))
        body, code = _render(429, "Too many attempts",
                             "Too many failed log-ins for this account or from your network. "
                             f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.")
        return body, code, {"Retry-After": str(seconds)}

    @app.errorhandler(NoSuchJobError)
    @app.errorhandler(DeserializationError)
    def no_such_rq_job(exc: Exception):
        """rq-dashboard asked for an RQ job that is gone (or was never ours to read)."""
        return _render(404, "No such job", "That job is not in the queue (any more).")

    @app.errorhandler(ResponseError)
    def redis_refused(exc: ResponseError):
        """Redis refused a command: in rq-dashboard (compacting an empty queue) that is the user's doing."""
        if request.blueprint == "rq_dashboard":
            return _render(409, "Nothing to do", "Redis refused that: the queue is probably empty.")
        return crashed(exc)

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):
        """An expired or missing CSRF token."""
        return _render(400, "Form expired", "The form expired or was not sent from this site. Reload and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        """Any other HTTP error, with its description."""
        return _render(exc.code or 500, exc.name, exc.description or "")

    @app.errorhandler(Exception)
    def crashed(exc: Exception):
        """An unexpected error: roll back, log it, and show a calm page."""
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _render(500, "Something went wrong", "The error was logged. Please try again in a moment.")
