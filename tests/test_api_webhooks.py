"""Webhook endpoints over the HTTP API, against a real local HTTP receiver: CRUD with a write-only
secret and an event filter, deliveries, dead letters and re-delivery with the same idempotency key;
non-public targets refused on create and change; a URL's password shown masked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from tests.support import webhooks
from tests.support.api import BASE, api_client, auth, token
from tests.support.webhooks import ALLOW_RECEIVER, ALLOW_RECEIVER_ENV, SECRET, Receiver, api_ticket, t0
from ticketing.webhooks import deliver_due

EP = f"{BASE}/webhooks/endpoints"
PUBLIC = "https://93.184.216.34/hook"  # a public address: accepted without DNS, never delivered to here
receiver = webhooks.receiver  # the fixture, shared with test_ticketing_webhooks


@pytest.fixture
def allow_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The API's settings allow-list the local receiver's loopback address, as a deployment would its own."""
    for key, value in ALLOW_RECEIVER_ENV.items():
        monkeypatch.setenv(key, value)
    yield


def test_endpoint_crud_never_returns_the_secret(db_url: str, receiver: Receiver, allow_receiver: None) -> None:
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


def test_event_filter_and_disabling_decide_what_is_sent(db_url: str, receiver: Receiver, allow_receiver: None) -> None:
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
    assert deliver_due(db_url, now=t0(), allow=ALLOW_RECEIVER).delivered == 0 and receiver.requests == []


def test_dead_letter_is_listed_and_redelivered_with_the_same_key(
    db_url: str, receiver: Receiver, allow_receiver: None
) -> None:
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
            deliver_due(db_url, now=now, allow=ALLOW_RECEIVER)
            now += timedelta(hours=1)
        dead = api.get(f"{BASE}/webhooks/dead-letters", headers=dispatcher).json()
        assert [(d["event"], d["status"], d["attempts"]) for d in dead] == [("ticket.created", "dead", 2)]
        assert "HTTP 503" in dead[0]["last_error"]
        assert api.get(f"{EP}/{ep['id']}", headers=admin).json()["dead"] == 1
        redo = api.post(f"{BASE}/webhooks/dead-letters/{dead[0]['id']}/redeliver", headers=dispatcher)
        assert redo.status_code == 200, redo.text
        assert (redo.json()["status"], redo.json()["attempts"]) == ("pending", 0)
        assert deliver_due(db_url, now=now, allow=ALLOW_RECEIVER).delivered == 1
        again = api.post(f"{BASE}/webhooks/dead-letters/{dead[0]['id']}/redeliver", headers=dispatcher)
        assert again.status_code == 409 and "not dead" in again.json()["detail"]
        assert api.post(f"{BASE}/webhooks/dead-letters/99999/redeliver", headers=dispatcher).status_code == 404
        delivered = api.get(f"{BASE}/webhooks/deliveries", params={"status": "delivered"}, headers=admin).json()
        assert [d["id"] for d in delivered] == [dead[0]["id"]]
    keys = [r["headers"]["idempotency-key"] for r in receiver.requests]
    assert len(keys) == 3 and len(set(keys)) == 1 and len(receiver.processed) == 1


LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://0.0.0.0/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://192.168.1.1/hook",
]


def test_non_public_targets_are_refused_on_create_and_on_change(db_url: str) -> None:
    """Every spelling of loopback, the metadata address and a private one: 422 naming the reason, on POST
    and on PATCH of an existing endpoint, which keeps its URL."""
    admin = auth(token(db_url, "admin"))
    with api_client(db_url) as api:
        ep = api.post(EP, json={"url": PUBLIC, "secret": SECRET}, headers=admin)
        assert ep.status_code == 201, ep.text
        one = f"{EP}/{ep.json()['id']}"
        for url in LOOPBACK_SPELLINGS:
            created = api.post(EP, json={"url": url, "secret": SECRET}, headers=admin)
            assert created.status_code == 422, (url, created.text)
            assert "address" in created.text and "FIELDWATCH_WEBHOOK_ALLOWED_TARGETS" in created.text
            changed = api.patch(one, json={"url": url}, headers=admin)
            assert changed.status_code == 422, (url, changed.text)
        assert [e["url"] for e in api.get(EP, headers=admin).json()] == [PUBLIC]


def test_allow_listed_target_is_accepted(db_url: str, receiver: Receiver, allow_receiver: None) -> None:
    """The receiver's loopback address is accepted once the settings allow-list it; other loopback spellings
    still are not."""
    admin = auth(token(db_url, "admin"))
    with api_client(db_url) as api:
        assert api.post(EP, json={"url": receiver.url, "secret": SECRET}, headers=admin).status_code == 201
        other = api.post(EP, json={"url": "http://127.0.0.2/hook", "secret": SECRET}, headers=admin)
        assert other.status_code == 422


def test_a_url_password_is_masked_in_responses_and_kept_on_change(db_url: str) -> None:
    """GET shows https://user:***@host/; PATCHing that masked URL back keeps the stored password; an error
    about a URL does not echo its password."""
    admin = auth(token(db_url, "admin"))
    dispatcher = auth(token(db_url, "dispatcher"))
    url = "https://erp:pa55-w0rd@93.184.216.34/hook"
    with api_client(db_url) as api:
        created = api.post(EP, json={"url": url, "secret": SECRET}, headers=admin)
        assert created.status_code == 201, created.text
        masked = "https://erp:***@93.184.216.34/hook"
        one = f"{EP}/{created.json()['id']}"
        assert created.json()["url"] == masked
        assert [e["url"] for e in api.get(EP, headers=dispatcher).json()] == [masked]
        assert api.get(one, headers=dispatcher).json()["url"] == masked
        moved = api.patch(one, json={"url": masked.replace("/hook", "/v2/hook")}, headers=admin)
        assert moved.status_code == 200 and moved.json()["url"] == "https://erp:***@93.184.216.34/v2/hook"
        bad = api.post(EP, json={"url": "ftp://erp:pa55-w0rd@93.184.216.34/", "secret": SECRET}, headers=admin)
        assert bad.status_code == 422 and "pa55-w0rd" not in bad.text
        for response in (created, moved):
            assert "pa55-w0rd" not in response.text
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT url FROM webhook_endpoints").fetchone()[0] == url.replace("/hook", "/v2/hook")


def test_a_refused_secret_is_not_echoed(db_url: str) -> None:
    """A secret too short to accept is refused with the rule, not with the secret itself."""
    admin = auth(token(db_url, "admin"))
    with api_client(db_url) as api:
        short = api.post(EP, json={"url": PUBLIC, "secret": "tiny-s3cret"}, headers=admin)
        assert short.status_code == 422 and "at least 16 characters" in short.text
        assert "tiny-s3cret" not in short.text
        ep = api.post(EP, json={"url": PUBLIC, "secret": SECRET}, headers=admin).json()
        rotated = api.patch(f"{EP}/{ep['id']}", json={"secret": "tiny-s3cret"}, headers=admin)
        assert rotated.status_code == 422 and "tiny-s3cret" not in rotated.text
