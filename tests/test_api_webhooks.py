"""Webhook endpoints over the HTTP API, against a real local HTTP receiver: CRUD with a write-only
secret and an event filter, deliveries, dead letters and re-delivery with the same idempotency key."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from tests.support import webhooks
from tests.support.api import BASE, api_client, auth, token
from tests.support.webhooks import SECRET, Receiver, api_ticket, t0
from ticketing.webhooks import deliver_due

EP = f"{BASE}/webhooks/endpoints"
receiver = webhooks.receiver  # the fixture, shared with test_ticketing_webhooks


def test_endpoint_crud_never_returns_the_secret(db_url: str, receiver: Receiver) -> None:
    """Create, read, update, disable and delete an endpoint; the secret is never in a response; bad input
    is refused with the field named; only admins change endpoints."""
    admin = auth(token(db_url, "admin"))
    with api_client(db_url) as api:
        r = api.post(EP, json={"url": receiver.url, "secret": SECRET, "events": ["ticket.assigned"]}, headers=admin)
        assert r.status_code == 201, r.text
        ep = r.json()
        assert SECRET not in r.text and "secret" not in ep
        assert (ep["url"], ep["events"], ep["enabled"], ep["secret_set"], ep["max_attempts"]) == (
            receiver.url,
            ["ticket.assigned"],
            True,
            True,
            8,
        )
        one = f"{EP}/{ep['id']}"
        assert api.get(one, headers=auth(token(db_url, "dispatcher"))).json() == ep
        changed = api.patch(one, json={"enabled": False, "secret": "another-secret-0123", "events": []}, headers=admin)
        assert changed.status_code == 200 and "another-secret" not in changed.text
        assert (changed.json()["enabled"], changed.json()["events"]) == (False, [])
        bad = api.post(EP, json={"url": "ftp://x", "secret": SECRET, "events": ["ticket.exploded"]}, headers=admin)
        assert bad.status_code == 422
        assert "must start with http" in bad.text and "unknown event type(s) ticket.exploded" in bad.text
        assert api.post(EP, json={"url": receiver.url, "secret": "short"}, headers=admin).status_code == 422
        dispatcher = auth(token(db_url, "dispatcher"))
        assert api.post(EP, json={"url": receiver.url, "secret": SECRET}, headers=dispatcher).status_code == 403
        assert [e["id"] for e in api.get(EP, headers=dispatcher).json()] == [ep["id"]]
        assert api.delete(one, headers=admin).status_code == 204
        assert api.get(one, headers=admin).status_code == 404
        assert api.patch(one, json={"enabled": True}, headers=admin).status_code == 404
    with psycopg.connect(db_url) as conn:  # the new secret is what is stored (for signing)
        assert conn.execute("SELECT count(*) FROM webhook_endpoints").fetchone()[0] == 0


def test_event_filter_and_disabling_decide_what_is_sent(db_url: str, receiver: Receiver) -> None:
    """An endpoint filtered to ticket.assigned gets no ticket.created; a disabled endpoint gets nothing new."""
    admin = auth(token(db_url, "admin"))
    with api_client(db_url) as api:
        only_assigned = api.post(
            EP, json={"url": receiver.url, "secret": SECRET, "events": ["ticket.assigned"]}, headers=admin
        ).json()
        disabled = api.post(EP, json={"url": receiver.url, "secret": SECRET, "enabled": False}, headers=admin).json()
        api_ticket(db_url)  # emits ticket.created
        deliveries = api.get(f"{BASE}/webhooks/deliveries", headers=admin).json()
        assert deliveries == []
        assert api.get(f"{EP}/{only_assigned['id']}", headers=admin).json()["pending"] == 0
        assert api.get(f"{EP}/{disabled['id']}", headers=admin).json()["pending"] == 0
    assert deliver_due(db_url, now=t0()).delivered == 0 and receiver.requests == []


def test_dead_letter_is_listed_and_redelivered_with_the_same_key(db_url: str, receiver: Receiver) -> None:
    """A receiver down for max_attempts tries dead-letters the event; after it recovers, re-delivery over
    the API sends it once more with the same idempotency key and marks it delivered."""
    admin = auth(token(db_url, "admin"))
    dispatcher = auth(token(db_url, "dispatcher"))
    with api_client(db_url) as api:
        ep = api.post(EP, json={"url": receiver.url, "secret": SECRET, "max_attempts": 2}, headers=admin).json()
        api_ticket(db_url)
        receiver.fail_first = 2
        now = t0()
        for _ in range(3):
            deliver_due(db_url, now=now)
            now += timedelta(hours=1)
        dead = api.get(f"{BASE}/webhooks/dead-letters", headers=dispatcher).json()
        assert [(d["event"], d["status"], d["attempts"]) for d in dead] == [("ticket.created", "dead", 2)]
        assert "HTTP 503" in dead[0]["last_error"]
        assert api.get(f"{EP}/{ep['id']}", headers=admin).json()["dead"] == 1
        redo = api.post(f"{BASE}/webhooks/dead-letters/{dead[0]['id']}/redeliver", headers=dispatcher)
        assert redo.status_code == 200, redo.text
        assert (redo.json()["status"], redo.json()["attempts"]) == ("pending", 0)
        assert deliver_due(db_url, now=now).delivered == 1
        again = api.post(f"{BASE}/webhooks/dead-letters/{dead[0]['id']}/redeliver", headers=dispatcher)
        assert again.status_code == 409 and "not dead" in again.json()["detail"]
        assert api.post(f"{BASE}/webhooks/dead-letters/99999/redeliver", headers=dispatcher).status_code == 404
        delivered = api.get(f"{BASE}/webhooks/deliveries", params={"status": "delivered"}, headers=admin).json()
        assert [d["id"] for d in delivered] == [dead[0]["id"]]
    keys = [r["headers"]["idempotency-key"] for r in receiver.requests]
    assert len(keys) == 3 and len(set(keys)) == 1 and len(receiver.processed) == 1
