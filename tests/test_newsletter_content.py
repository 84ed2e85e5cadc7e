"""Newsletter content: what an author writes becomes safe HTML, names fill in safely, unsubscribe links are signed."""

from __future__ import annotations

import re

import pytest

from webapp.newsletter_content import (
    FALLBACK_NAME,
    BadUnsubscribeToken,
    email_html,
    make_unsubscribe_token,
    personalise,
    read_unsubscribe_token,
    render_body,
    safe_header,
)

SECRET = "test-secret-key"


def test_markdown_becomes_html_with_a_plain_text_alternative():
    """Headings, bold, lists and links render; the text part is the Markdown as written."""
    body = "# Spring sale\r\n\r\n**Everything** must go:\r\n\r\n- shoes\r\n- hats\r\n\r\n[Shop](https://shop.example/)"
    html, text = render_body(body, "markdown")
    assert "<h1>Spring sale</h1>" in html
    assert "<strong>Everything</strong>" in html
    assert "<li>shoes</li>" in html
    assert '<a href="https://shop.example/" rel="noopener noreferrer">Shop</a>' in html
    assert text == body.replace("\r\n", "\n") + "\n"


@pytest.mark.parametrize("attack, forbidden", [
    ("<script>alert(1)</script>", "alert(1)"),
    ('<img src="https://x.example/a.png" onerror="alert(2)">', "onerror"),
    ('<p onclick="alert(3)">hi</p>', "onclick"),
    ("[click](javascript:alert(4))", "javascript:"),
    ('<a href="JaVaScRiPt:alert(5)">x</a>', "alert(5)"),
    ('<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>', "data:"),
    ("<iframe src='https://evil.example'></iframe>", "iframe"),
    ("<style>body{display:none}</style>", "display:none"),
    ('<form action="https://evil.example"><input name=p></form>', "<form"),
])
def test_an_authors_html_cannot_run_code_in_the_newsletter(attack, forbidden):
    """Scripts, event handlers, javascript:/data: links, frames, styles and forms are removed."""
    html, _text = render_body(f"Hello\n\n{attack}\n\nBye", "markdown")
    assert forbidden.lower() not in html.lower()
    assert "<p>Hello</p>" in html and "<p>Bye</p>" in html


def test_plain_text_is_escaped_into_paragraphs():
    """A text body keeps its words, not its markup: blank lines make paragraphs, single breaks <br>."""
    html, text = render_body("Dear reader,\r\nsee <b>this</b> & that.\r\n\r\n\r\nBye *now*", "text")
    assert html == "<p>Dear reader,<br>see &lt;b&gt;this&lt;/b&gt; &amp; that.</p>\n<p>Bye *now*</p>"
    assert text == "Dear reader,\nsee <b>this</b> & that.\n\n\nBye *now*\n"


def test_an_unknown_body_format_is_refused():
    """A format other than markdown or text is a programming error, not silently plain text."""
    with pytest.raises(ValueError, match="unknown body format 'html'"):
        render_body("<p>x</p>", "html")


@pytest.mark.parametrize("placeholder", ["{{ name }}", "{{name}}", "{{  name\t}}"])
def test_the_name_placeholder_is_filled_whatever_its_spacing(placeholder):
    """{{ name }}, {{name}} and other spacings are all replaced in both parts."""
    html, text = personalise(f"<p>Hello {placeholder},</p>", f"Hello {placeholder},", "Ada")
    assert (html, text) == ("<p>Hello Ada,</p>", "Hello Ada,")


def test_a_name_with_markup_is_escaped_in_html_and_kept_as_words_in_text():
    """<script> in a subscriber's name is shown, never run; the text part shows it as typed."""
    name = "<script>alert('x')</script> & \"Co\""
    html, text = personalise("<p>Hi {{ name }}</p>", "Hi {{ name }}", name)
    assert html == "<p>Hi &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;Co&quot;</p>"
    assert text == f"Hi {name}"


def test_a_name_loses_line_breaks_and_control_characters():
    """CR, LF, NUL, tabs and bidi overrides are removed, so a name cannot break lines or read backwards."""
    html, text = personalise("{{ name }}", "{{ name }}", "Eve\r\nBcc: x@evil.example\x00\t\u202eoops")
    assert text == "Eve Bcc: x@evil.example oops"
    assert html == text


@pytest.mark.parametrize("empty", ["", None, "   ", "\r\n\x00"])
def test_a_subscriber_without_a_name_is_greeted_as_there(empty):
    """"Hello {{ name }}," reads "Hello there," for a subscriber with no (usable) name."""
    assert FALLBACK_NAME == "there"
    assert personalise("Hello {{ name }},", "Hello {{ name }},", empty) == ("Hello there,", "Hello there,")


def test_a_name_that_looks_like_a_placeholder_or_a_regex_group_is_inserted_literally():
    """A name containing {{ name }} or \\1 is not expanded again."""
    html, text = personalise("Hi {{ name }}", "Hi {{ name }}", r"{{ name }} \1 \g<0>")
    assert text == r"Hi {{ name }} \1 \g<0>"
    assert html == r"Hi {{ name }} \1 \g&lt;0&gt;"


def test_a_header_value_cannot_carry_a_line_break():
    """Subjects and display names lose CR/LF and controls; spaces fold; very long values are cut."""
    assert safe_header("Sale!\r\nBcc: victim@example.com") == "Sale! Bcc: victim@example.com"
    assert safe_header("a\x00b\x1bc\u2028d\x85e") == "a b c d e"
    assert safe_header(None) == ""
    assert len(safe_header("x" * 1000)) == 250


def test_an_unsubscribe_token_round_trips():
    """The token carries the subscriber and the newsletter (or none, for a link outside any newsletter)."""
    assert read_unsubscribe_token(SECRET, make_unsubscribe_token(SECRET, 42, 7)) == (42, 7)
    assert read_unsubscribe_token(SECRET, make_unsubscribe_token(SECRET, 42, None)) == (42, None)


def test_an_unsubscribe_token_is_usable_in_a_url_and_the_same_every_time():
    """URL-safe characters only, and no timestamp: last year's link is the same link and still works."""
    token = make_unsubscribe_token(SECRET, 123456, 789)
    assert token == make_unsubscribe_token(SECRET, 123456, 789)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_a_tampered_or_foreign_token_is_rejected():
    """Changed characters, another key, a truncated token or garbage all raise BadUnsubscribeToken."""
    token = make_unsubscribe_token(SECRET, 42, 7)
    payload, _dot, signature = token.rpartition(".")
    other_payload = make_unsubscribe_token(SECRET, 43, 7).rpartition(".")[0]
    tampered = [
        f"{other_payload}.{signature}",  # someone else's subscriber id under our signature
        token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
        token[:-5],
        make_unsubscribe_token("another-key", 42, 7),
        "",
        "not-a-token",
        "ünïcode.garbage",
    ]
    for bad in tampered:
        with pytest.raises(BadUnsubscribeToken, match="invalid unsubscribe link"):
            read_unsubscribe_token(SECRET, bad)


def test_a_token_signed_with_our_key_for_another_purpose_is_rejected():
    """Our SECRET_KEY signs other things too (sessions, CSRF); the salt keeps those from unsubscribing anyone."""
    from itsdangerous import URLSafeSerializer

    session_like = URLSafeSerializer(SECRET).dumps([42, 7])
    with pytest.raises(BadUnsubscribeToken):
        read_unsubscribe_token(SECRET, session_like)


def test_the_email_body_gets_inline_styles_and_attributes_stay_quoted(ctx):
    """Each element carries a style attribute; a hostile attribute value is escaped, never turned into markup."""
    html, _text = render_body('# Sale\n\n[shop](https://shop.example/ "<p onclick=alert(1) x=")\n\n'
                              '![pic](https://shop.example/a.png)', "markdown")
    message = email_html(html, subject="Sale", to_email="ada@example.com", unsubscribe_url="https://x.test/u/t")
    assert re.search(r'<h1 style="[^"]*font-size:26px[^"]*">Sale</h1>', message)
    assert re.search(r'<img alt="pic" src="https://shop.example/a.png" style="max-width:100%;[^"]*">', message)
    assert 'title="&lt;p onclick=alert(1) x="' in message
    assert "<p onclick" not in message and "<style" not in message


def test_a_sent_newsletter_is_the_styled_template_with_name_and_unsubscribe_link(app, as_alice, burst_worker,
                                                                                 mailbox):
    """The HTML part that arrives: inline-styled wrapper, the subscriber's name, the visible unsubscribe link;
    a hostile subject and name are shown as text."""
    from tests.test_newsletters import compose, send
    from webapp.extensions import db
    from webapp.models import Subscriber

    with app.app_context():
        db.session.add(Subscriber(email="ada@example.com", name="Ada <img src=x onerror=alert(1)> & Co"))
        db.session.commit()
    send(as_alice, compose(as_alice, subject="</title><script>alert(2)</script> News",
                           body="Hello {{ name }},\n\n**New** shoes are in."))
    burst_worker("fast", "bulk")
    [message] = mailbox.messages
    html = message.get_body(("html",)).get_content()
    unsubscribe = message["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith("http://backhaul.test/u/")
    # The wrapper: a centred 600 px table, every box styled inline (mail clients drop <style> and CSS files).
    assert '<table role="presentation" width="600"' in html and "max-width:600px" in html
    assert "<style" not in html and "<link" not in html
    assert re.search(r'<p style="margin:0 0 16px;">Hello Ada &lt;img src=x onerror=alert\(1\)&gt; &amp; Co,</p>', html)
    assert re.search(r'<strong>New</strong>', html)
    # The footer: who it was sent to and a visible unsubscribe link (the same link as the one-click header).
    assert "This newsletter was sent to ada@example.com" in html
    assert re.search(rf'<a href="{re.escape(unsubscribe)}" style="[^"]+">Unsubscribe</a>', html)
    assert "<title>&lt;/title&gt;&lt;script&gt;alert(2)&lt;/script&gt; News</title>" in html
    assert "<script>" not in html and "<img src=x" not in html
    text = message.get_body(("plain",)).get_content()
    assert "Hello Ada <img src=x onerror=alert(1)> & Co," in text
    assert text.rstrip().endswith(f"--\nUnsubscribe: {unsubscribe}")
