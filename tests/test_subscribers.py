"""Subscribers: an administrator re-subscribes an unsubscribed address with a recorded reason."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tests.test_newsletters import compose, send
from webapp.extensions import db
from webapp.models import Subscriber
from webapp.models.job import utcnow


def unsubscribed(app, email: str = "ada@example.com", name: str = "Ada") -> int:
    """An address that unsubscribed earlier; return its id."""
    with app.app_context():
        subscriber = Subscriber(email=email, name=name, active=False, unsubscribed_at=utcnow())
        db.session.add(subscriber)
        db.session.commit()
        return subscriber.id


def resubscribe(client, subscriber_id: int, reason: str):
    """Fill in the re-subscribe form and send it."""
    path = f"/subscribers/{subscriber_id}/resubscribe"
    return client.post(path, {"reason": reason}, form_page=path)


def test_an_admin_resubscribes_with_a_reason_and_the_list_says_who_when_and_why(app, as_admin):
    """The unsubscribed row offers Re-subscribe; afterwards it is active and shows the reason, the admin and the date."""
    subscriber_id = unsubscribed(app)
    listing = as_admin.get("/subscribers/").get_data(as_text=True)
    assert f'href="/subscribers/{subscriber_id}/resubscribe"' in listing
    form = as_admin.get(f"/subscribers/{subscriber_id}/resubscribe").get_data(as_text=True)
    assert "Re-subscribe ada@example.com" in form and 'name="reason"' in form
    response = resubscribe(as_admin, subscriber_id, "  asked us by phone on 2 Dec <b>really</b>\r\n ")
    assert response.status_code == 303
    page = as_admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "ada@example.com is subscribed again." in page
    row = re.search(r"<tr><td[^>]*>ada@example.com</td>.*?</tr>", page, re.S)
    assert row, page
    assert ">active" in row.group(0) and "Re-subscribe</a>" not in row.group(0)
    assert "by root@example.com" in row.group(0)
    assert "“asked us by phone on 2 Dec &lt;b&gt;really&lt;/b&gt;”" in row.group(0)
    assert f"Re-subscribed {utcnow():%Y-%m-%d}" in row.group(0)
    with app.app_context():
        subscriber = db.session.get(Subscriber, subscriber_id)
        assert subscriber is not None and subscriber.active
        assert subscriber.resubscribe_reason == "asked us by phone on 2 Dec <b>really</b>"


@pytest.mark.parametrize("reason", ["", "   ", "\r\n\t"])
def test_an_empty_reason_is_refused_with_a_message(app, as_admin, reason):
    """Without a reason the form comes back with 'Say why…' and the address stays unsubscribed."""
    subscriber_id = unsubscribed(app)
    response = resubscribe(as_admin, subscriber_id, reason)
    assert response.status_code == 400
    assert "Say why this address is re-subscribed." in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Subscriber, subscriber_id).active is False


def test_the_form_needs_its_csrf_token(app, as_admin):
    """A cross-site POST (no token) re-subscribes nobody."""
    subscriber_id = unsubscribed(app)
    response = as_admin.client.post(f"/subscribers/{subscriber_id}/resubscribe", data={"reason": "forged"})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(Subscriber, subscriber_id).active is False


def test_staff_cannot_resubscribe(app, as_alice):
    """A staff account (not an admin) gets 403 for the form and for the POST, and nothing changes."""
    subscriber_id = unsubscribed(app)
    path = f"/subscribers/{subscriber_id}/resubscribe"
    assert as_alice.get(path).status_code == 403
    assert as_alice.post(path, {"reason": "because"}).status_code == 403
    with app.app_context():
        assert db.session.get(Subscriber, subscriber_id).active is False


def test_adding_an_unsubscribed_address_points_to_resubscribe(app, as_admin):
    """Adding the address again does not silently re-activate it: it says to use Re-subscribe."""
    subscriber_id = unsubscribed(app)
    response = as_admin.post("/subscribers/", {"email": "ADA@example.com", "name": ""}, form_page="/subscribers/")
    page = as_admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "ada@example.com unsubscribed earlier: use Re-subscribe on their row and say why." in page
    with app.app_context():
        assert db.session.get(Subscriber, subscriber_id).active is False


def test_a_resubscribed_person_receives_the_next_newsletter(app, users, as_admin, as_alice, burst_worker, mailbox):
    """Unsubscribed: left out of a send. Re-subscribed with a reason: the next newsletter reaches them."""
    subscriber_id = unsubscribed(app)
    with app.app_context():
        db.session.add(Subscriber(email="bea@example.com", name="Bea"))
        db.session.commit()
    send(as_alice, compose(as_alice, subject="Before"))
    burst_worker("fast", "bulk")
    assert mailbox.recipients == ["bea@example.com"]
    mailbox.clear()
    assert resubscribe(as_admin, subscriber_id, "asked us by phone on 2 Dec").status_code == 303
    send(as_alice, compose(as_alice, subject="After"))
    burst_worker("fast", "bulk")
    assert sorted(mailbox.recipients) == ["ada@example.com", "bea@example.com"]
    to_ada = next(m for m in mailbox.messages if m["To"].addresses[0].addr_spec == "ada@example.com")
    assert to_ada["Subject"] == "After"
    assert "Hello Ada," in to_ada.get_body(("plain",)).get_content()
    with app.app_context():
        assert db.session.scalar(select(Subscriber.active).where(Subscriber.id == subscriber_id)) is True
