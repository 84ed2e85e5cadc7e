"""Newsletter content: Markdown or text to safe HTML, personalisation, the e-mail around it, unsubscribe tokens,
header values.

Used by the web process (preview) and by workers (sending). Everything an author or
a subscriber typed is treated as hostile: the author's HTML is sanitised, a
subscriber's name is escaped in HTML and stripped of control characters everywhere,
and a header value can never carry a line break.
"""

from __future__ import annotations

import html
import re

import markdown
import nh3
from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

FORMATS = ("markdown", "text")
NAME_PLACEHOLDER = re.compile(r"\{\{\s*name\s*\}\}")
# C0 and C1 controls (CR, LF, NUL, NEL...), Unicode line/paragraph separators (some mail
# software breaks header lines on them) and bidi overrides/isolates (they make a display
# name read backwards, a known spoofing trick).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# A subscriber without a name reads "Hello there," rather than "Hello ,".
FALLBACK_NAME = "there"
MAX_NAME = 200
MAX_HEADER = 250
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "hr", "i", "img",
    "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"},
                      "abbr": {"title"}, "td": {"align"}, "th": {"align"}}
# No javascript:, data: or vbscript: URLs survive, whatever their spelling.
URL_SCHEMES = {"http", "https", "mailto"}
TOKEN_SALT = "backhaul-unsubscribe"
EMAIL_TEMPLATE = "newsletters/_email.html"
# Mail clients drop <style> blocks and linked CSS, so every element of the body carries its own style.
FONT = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
INLINE_STYLES = {
    "p": "margin:0 0 16px;",
    "h1": f"{FONT};margin:0 0 16px;font-size:26px;line-height:1.25;color:#17223b;",
    "h2": f"{FONT};margin:24px 0 12px;font-size:21px;line-height:1.3;color:#17223b;",
    "h3": f"{FONT};margin:20px 0 10px;font-size:18px;line-height:1.3;color:#17223b;",
    "h4": f"{FONT};margin:16px 0 8px;font-size:16px;color:#17223b;",
    "a": "color:#1f5fbf;text-decoration:underline;",
    "img": "max-width:100%;height:auto;border:0;",
    "blockquote": "margin:0 0 16px;padding:4px 0 4px 14px;border-left:3px solid #d0d5dd;color:#475467;",
    "pre": "margin:0 0 16px;padding:12px;background:#f2f4f7;border-radius:4px;white-space:pre-wrap;font-size:14px;",
    "code": "font-family:Menlo,Consolas,monospace;font-size:14px;background:#f2f4f7;",
    "ul": "margin:0 0 16px;padding-left:24px;",
    "ol": "margin:0 0 16px;padding-left:24px;",
    "li": "margin:0 0 6px;",
    "hr": "border:0;border-top:1px solid #e4e7ec;margin:24px 0;",
    "table": "border-collapse:collapse;margin:0 0 16px;",
    "th": "border:1px solid #d0d5dd;padding:6px 10px;background:#f2f4f7;text-align:left;",
    "td": "border:1px solid #d0d5dd;padding:6px 10px;",
}


class BadUnsubscribeToken(ValueError):
    """The unsubscribe token was not made by us (tampered, truncated or signed with another key)."""


def render_body(body: str, fmt: str) -> tuple[str, str]:
    """The HTML and plain-text parts of a newsletter body written in ``fmt`` ("markdown" or "text")."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown body format {fmt!r} (expected one of {', '.join(FORMATS)})")
    source = (body or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if fmt == "markdown":
        raw_html = markdown.markdown(source, extensions=["extra", "sane_lists"], output_format="html")
        safe_html = nh3.clean(raw_html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes=URL_SCHEMES,
                              link_rel="noopener noreferrer")
    else:
        paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", source) if p.strip()]
        safe_html = "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    # Markdown source is meant to read well as plain text, so it is the text alternative as written.
    return safe_html, source + "\n"


def clean_name(name: str | None) -> str:
    """A subscriber name without control characters, with runs of spaces folded, at most 200 characters."""
    return " ".join(CONTROL.sub(" ", name or "").split())[:MAX_NAME]


def personalise(html_part: str, text_part: str, name: str | None) -> tuple[str, str]:
    """Fill ``{{ name }}`` (any spacing): escaped in the HTML part, cleaned in both, "there" when empty."""
    cleaned = clean_name(name) or FALLBACK_NAME
    escaped = html.escape(cleaned, quote=True)
    # Functions as replacements, so a backslash in a name is never read as a group reference.
    return (NAME_PLACEHOLDER.sub(lambda _m: escaped, html_part),
            NAME_PLACEHOLDER.sub(lambda _m: cleaned, text_part))


def email_html(body_html: str, *, subject: str, to_email: str, unsubscribe_url: str) -> str:
    """The whole HTML part: the personalised body, styled inline, in the e-mail template with its unsubscribe footer.

    ``body_html`` must come from render_body/personalise; it is sanitised once more here, which
    also adds the inline styles (nh3 escapes every attribute value, so no text can become markup).
    """
    styled = nh3.clean(body_html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes=URL_SCHEMES,
                       link_rel="noopener noreferrer",
                       set_tag_attribute_values={tag: {"style": style} for tag, style in INLINE_STYLES.items()})
    # The environment's own loader and autoescaping, without request context processors: workers have no request.
    template = current_app.jinja_env.get_template(EMAIL_TEMPLATE)
    return template.render(body=styled, subject=safe_header(subject), to_email=(to_email or "").strip(),
                           unsubscribe_url=unsubscribe_url, font=FONT)


def email_text(text_part: str, unsubscribe_url: str) -> str:
    """The plain-text part with the unsubscribe link under a signature separator."""
    return f"{text_part.rstrip()}\n\n--\nUnsubscribe: {unsubscribe_url}\n"


def safe_header(value: str | None) -> str:
    """A header value (subject, display name) that cannot start a new header line."""
    return " ".join(CONTROL.sub(" ", value or "").split())[:MAX_HEADER]


def make_unsubscribe_token(secret: str, subscriber_id: int, newsletter_id: int | None) -> str:
    """A signed token for the one-click unsubscribe link of one subscriber (and the newsletter it came in).

    It has no timestamp and never expires, on purpose: the link in last year's newsletter
    must still unsubscribe. Rotating SECRET_KEY is what invalidates old links.
    """
    return URLSafeSerializer(secret, salt=TOKEN_SALT).dumps([subscriber_id, newsletter_id])


def read_unsubscribe_token(secret: str, token: str) -> tuple[int, int | None]:
    """The (subscriber id, newsletter id) signed in ``token``; BadUnsubscribeToken if we did not sign it."""
    try:
        payload = URLSafeSerializer(secret, salt=TOKEN_SALT).loads(token)
    except BadData as exc:  # a bad signature, or a payload that is not ours
        raise BadUnsubscribeToken("invalid unsubscribe link") from exc
    if not (isinstance(payload, list) and len(payload) == 2):
        raise BadUnsubscribeToken("invalid unsubscribe link")
    subscriber_id, newsletter_id = payload
    if type(subscriber_id) is not int or not (newsletter_id is None or type(newsletter_id) is int):
        raise BadUnsubscribeToken("invalid unsubscribe link")
    return subscriber_id, newsletter_id
