"""How large a request body may be: small everywhere, large only where files are uploaded.

MAX_CONTENT_LENGTH (1 MB) holds for every request, anonymous /login included, so nobody
can make a web process read a huge body; the upload routes named here raise it for their
own requests (Flask 3.1's per-request ``request.max_content_length``) before anything
reads the body.
"""

from __future__ import annotations

from flask import Flask, current_app, request

# endpoint -> the setting that holds its limit in bytes
LARGE_BODIES = {
    "photos.upload": "PHOTO_UPLOAD_MAX_BYTES",
    "subscribers.import_csv": "IMPORT_MAX_BYTES",
}


def raise_limit_for_uploads() -> None:
    """Give the upload routes their larger limit; every other request keeps MAX_CONTENT_LENGTH."""
    setting = LARGE_BODIES.get(request.endpoint or "")
    if setting:
        request.max_content_length = current_app.config[setting]


def register_body_limits(app: Flask) -> None:
    """Install the hook first, so it runs before CSRF (or anything else) reads a form."""
    app.before_request_funcs.setdefault(None, []).insert(0, raise_limit_for_uploads)
