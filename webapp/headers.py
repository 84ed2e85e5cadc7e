"""Security headers on every response: a Content-Security-Policy, no framing, no sniffing, HSTS in production.

Our pages run no inline script (htmx and our own scripts come from /static), so
script-src is 'self'. Style attributes stay allowed (style-src-attr): progress bars set
their width inline, and a style attribute cannot run code.

rq-dashboard (/rq) gets a policy of its own, because it is built differently:
- one inline <script> per page, rendered per request: it is allowed by its SHA-256 hash,
  computed from the response we send, so no other inline script can run;
- its row templates are compiled by underscore's _.template, which uses ``new Function``:
  that needs 'unsafe-eval'. This does not let injected markup run: an injected
  ``<img onerror=...>`` or ``<script>`` is inline, has neither the hash nor a nonce, and
  is refused, which is the wall against stored XSS through job data.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, current_app, request

# Every inline <script> that a browser would run: not src=, not type="text/template".
INLINE_SCRIPT = re.compile(
    rb"<script(?![^>]*\bsrc=)(?![^>]*type=\"text/template\")[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)

BASE_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "style-src-attr": "'unsafe-inline'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def _joined(policy: dict[str, str]) -> str:
    """A policy as the header spells it."""
    return "; ".join(f"{name} {value}" for name, value in policy.items())


# Built once: almost every response carries exactly this.
BASE_CSP = _joined(BASE_POLICY)


def _script_hashes(body: bytes) -> list[str]:
    """CSP source expressions for each inline script in ``body``."""
    return [f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
            for script in INLINE_SCRIPT.findall(body)]


def content_security_policy(response: Response) -> str:
    """The policy for this response: the base one, or rq-dashboard's (scoped to its blueprint)."""
    if request.blueprint == "rq_dashboard" and response.mimetype == "text/html" and not response.direct_passthrough:
        hashes = _script_hashes(response.get_data())
        return _joined({**BASE_POLICY, "script-src": " ".join(["'self'", "'unsafe-eval'", *hashes])})
    if request.blueprint == "devmail":
        # A sent message is shown in a sandboxed frame (no scripts); let its own CSS apply.
        return _joined({**BASE_POLICY, "style-src": "'self' 'unsafe-inline'"})
    return BASE_CSP


def add_security_headers(response: Response) -> Response:
    """Set the security headers on ``response``."""
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(response)
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if current_app.config["HSTS"]:
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return response


def register_security_headers(app: Flask) -> None:
    """Add the headers to every response of ``app``, error pages and static files included."""
    app.after_request(add_security_headers)
