"""Binding extensions and blueprints to the app (called by create_app)."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from webapp.extensions import csrf, db, login_manager, mail, migrate


def register_extensions(app: Flask) -> None:
    """Initialise database, migrations, login, CSRF and mail; security headers on every response."""
    from webapp import body_limits, headers, models, signed_in

    body_limits.register_body_limits(app)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.config.get("MIGRATIONS_DIR", "migrations")))
    csrf.init_app(app)
    mail.init_app(app)
    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        # Behind a router (Heroku, a load balancer) the client's address and scheme arrive in
        # X-Forwarded-*; the login throttle and the same-origin checks need the real ones.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]  # Flask documents wrapping wsgi_app
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies)
    headers.register_security_headers(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"

    @login_manager.user_loader
    def load_user(session_id: str) -> models.User | None:
        """The logged-in user for this request (None when that session was ended)."""
        return signed_in.load(session_id)


def register_blueprints(app: Flask) -> None:
    """Mount one blueprint per feature, plus rq-dashboard at /rq; throttle the login."""
    from webapp import queue_classes, throttle
    from webapp.views import (
        auth,
        devmail,
        exports,
        files,
        health,
        jobs,
        newsletters,
        ops,
        photos,
        reports,
        rqdash,
        schedules,
        subscribers,
    )

    for module in (auth, jobs, files, exports, photos, reports, newsletters, subscribers, schedules, ops, health):
        app.register_blueprint(module.bp)
    if app.config["DEV_MAILBOX"]:
        app.register_blueprint(devmail.bp)
    throttle.register_login_throttle(app)
    rqdash.mount(app)
    app.context_processor(lambda: {"nav_items": nav_items})
    queue_classes.init_app(app)


# (label, endpoint, admin only); entries whose blueprint is not registered are left out.
NAV = (
    ("Jobs", "jobs.index", False),
    ("Exports", "exports.new", False),
    ("Photos", "photos.index", False),
    ("Reports", "reports.new", False),
    ("Newsletters", "newsletters.index", False),
    ("Schedules", "schedules.index", False),
    ("Operations", "ops.index", True),
)


def nav_items() -> list[dict]:
    """The main navigation for the current user, with the current section marked."""
    from flask import current_app, request, url_for
    from flask_login import current_user

    items = []
    section = (request.endpoint or "").split(".", 1)[0]
    for label, endpoint, admin_only in NAV:
        if endpoint not in current_app.view_functions or (admin_only and not current_user.is_admin):
            continue
        items.append({"label": label, "url": url_for(endpoint), "active": endpoint.split(".")[0] == section})
    if current_user.is_admin:
        items.append({"label": "Queues", "url": "/rq/", "active": section == "rq_dashboard"})
    return items
