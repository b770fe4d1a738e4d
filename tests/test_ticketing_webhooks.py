"""Outbound webhooks against a real local HTTP receiver: signed, retried with backoff, deduplicated
by idempotency key, dead-lettered after N attempts."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from tests.support import webhooks
from tests.support.webhooks import SECRET, Receiver, api_ticket, t0
from ticketing.webhook_admin import create_endpoint
from ticketing.webhooks import backoff, deliver_due

receiver = webhooks.receiver  # the fixture, shared with test_api_webhooks


def _deliveries(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT event, status, attempts, last_error FROM webhook_deliveries ORDER BY id").fetchall()


def test_backoff_grows_exponentially_with_a_cap_and_bounded_jitter() -> None:
    """5, 10, 20 … s, never above the cap, jitter within ±20%."""
    assert [backoff(n, rand=lambda: 0.5) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert backoff(30, rand=lambda: 0.5) == 3600.0
    assert 4.0 <= backoff(1, rand=lambda: 0.0) <= backoff(1, rand=lambda: 1.0) <= 6.0


def test_event_is_signed_retried_and_delivered_once(db_url: str, receiver: Receiver) -> None:
    """Two 503s, then success: three requests with one idempotency key and valid signatures; one event processed."""
    with psycopg.connect(db_url) as conn:
        create_endpoint(conn, url=receiver.url, secret=SECRET, events=["ticket.created"])
    ticket = api_ticket(db_url)
    receiver.fail_first = 2
    now = t0()
    assert deliver_due(db_url, now=now).retried == 1
    assert deliver_due(db_url, now=now + timedelta(seconds=1)).retried == 0  # not due yet (backoff)
    for _ in range(3):
        now += timedelta(minutes=5)
        deliver_due(db_url, now=now)
    assert _deliveries(db_url) == [("ticket.created", "delivered", 3, "")]
    keys = {r["headers"]["idempotency-key"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(keys) == 1
    assert list(receiver.processed.values()) == [
        {
            "event": "ticket.created",
            "ticket_id": ticket,
            "status": "new",
            "at": receiver.processed[next(iter(keys))]["at"],
            "external_id": "CRM-1",
            "external_source": None,
        }
    ]


def test_a_failing_receiver_is_dead_lettered_after_max_attempts(db_url: str, receiver: Receiver) -> None:
    """An endpoint that always fails gets exactly max_attempts tries, then the delivery is dead with its reason."""
    with psycopg.connect(db_url) as conn:
        create_endpoint(conn, url=receiver.url, secret=SECRET, max_attempts=3)
    api_ticket(db_url)
    receiver.fail_first = 1000
    now = t0()
    for _ in range(6):
        deliver_due(db_url, now=now)
        now += timedelta(hours=1)
    [(event, status, attempts, error)] = _deliveries(db_url)
    assert (event, status, attempts) == ("ticket.created", "dead", 3) and "HTTP 503" in error
    assert len(receiver.requests) == 3


def test_unreachable_receiver_is_retried_not_lost(db_url: str) -> None:
    """A closed port counts as a failed attempt, recorded with the error."""
    with psycopg.connect(db_url) as conn:
        create_endpoint(conn, url="http://127.0.0.1:9/hook", secret=SECRET)
    api_ticket(db_url)
    assert deliver_due(db_url, now=t0(), timeout_s=1).retried == 1
    [(_, status, attempts, error)] = _deliveries(db_url)
    assert (status, attempts) == ("pending", 1) and "ConnectError" in error
