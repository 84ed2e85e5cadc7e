"""Newsletter content: Markdown or text to safe HTML, personalisation, unsubscribe tokens.

Used by the web process (preview) and by workers (sending). Everything a
subscriber or author typed is treated as hostile: the author's HTML is
sanitised, a subscriber's name is escaped in HTML and stripped of control
characters everywhere, and header values can never carry a line break.
"""

from __future__ import annotations

import html
import re

import markdown
import nh3
from itsdangerous import BadSignature, URLSafeSerializer

NAME_PLACEHOLDER = re.compile(r"\{\{\s*name\s*\}\}")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# When a subscriber has no name, "Hello {{ name }}," reads "Hello there,".
FALLBACK_NAME = "there"
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "em", "h1", "h2", "h3", "h4", "hr", "i", "img", "li", "ol",
    "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"}}
TOKEN_SALT = "backhaul-unsubscribe"


class BadUnsubscribeToken(ValueError):
    """The unsubscribe token was not made by us (tampered, truncated or from another key)."""


def render_body(body: str, fmt: str) -> tuple[str, str]:
    """The HTML and plain-text parts of a newsletter body written in ``fmt`` ("markdown" or "text")."""
    if fmt == "markdown":
        raw_html = markdown.markdown(body, extensions=["extra", "sane_lists"], output_format="html")
        safe_html = nh3.clean(raw_html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                              url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer")
    else:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
        safe_html = "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return safe_html, body.strip() + "\n"


def clean_name(name: str | None) -> str:
    """A subscriber name with control characters (CR, LF, NUL...) removed and spaces folded."""
    return " ".join(CONTROL.sub(" ", name or "").split())[:200]


def personalise(html_part: str, text_part: str, name: str | None) -> tuple[str, str]:
    """Fill ``{{ name }}``: escaped in the HTML part, cleaned in both."""
    cleaned = clean_name(name) or FALLBACK_NAME
    escaped = html.escape(cleaned, quote=True)
    return NAME_PLACEHOLDER.sub(lambda _m: escaped, html_part), NAME_PLACEHOLDER.sub(lambda _m: cleaned, text_part)


def safe_header(value: str) -> str:
    """A header value (subject, display name) with no way to start a new header line."""
    return " ".join(CONTROL.sub(" ", value or "").split())[:250]


def make_unsubscribe_token(secret: str, subscriber_id: int, newsletter_id: int | None) -> str:
    """A signed token for the one-click unsubscribe link.

    It does not expire on purpose: the link in a newsletter from last year must still work.
    """
    return URLSafeSerializer(secret, salt=TOKEN_SALT).dumps([subscriber_id, newsletter_id])


def read_unsubscribe_token(secret: str, token: str) -> tuple[int, int | None]:
    """The (subscriber id, newsletter id) in a token; BadUnsubscribeToken if it is not ours."""
    try:
        subscriber_id, newsletter_id = URLSafeSerializer(secret, salt=TOKEN_SALT).loads(token)
    except (BadSignature, ValueError, TypeError) as exc:
        raise BadUnsubscribeToken("invalid unsubscribe link") from exc
    if not isinstance(subscriber_id, int) or not (newsletter_id is None or isinstance(newsletter_id, int)):
        raise BadUnsubscribeToken("invalid unsubscribe link")
    return subscriber_id, newsletter_id
