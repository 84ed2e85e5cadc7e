"""The WSGI entry point: ``gunicorn wsgi:app``."""

import sys

from webapp import create_app
from webapp.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One line that says what to set, instead of a traceback in every gunicorn worker.
    print(f"backhaul: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
