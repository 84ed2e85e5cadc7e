"""Backhaul: a Flask back office whose heavy work runs on RQ workers, never in a request."""

from __future__ import annotations

from flask import Flask

from webapp.config import PROJECT_ROOT, load_config


def create_app(config: dict | None = None) -> Flask:
    """Build the app: settings, extensions, blueprints, error pages, commands."""
    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.update(load_config(config))
    from webapp import commands, db_errors, errors, logs, setup

    logs.configure_logging(app)
    setup.register_extensions(app)
    setup.register_blueprints(app)
    errors.register_errorhandlers(app)
    db_errors.register(app)
    commands.register_commands(app)
    return app
