"""Outbound webhooks against a real local HTTP receiver: signed, retried with backoff, deduplicated
by idempotency key, dead-lettered after N attempts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import psycopg
import pytest

from ticketing.webhooks import add_endpoint, backoff, deliver_due, verify

SECRET = "s3cret-s3cret-s3cret"


def _t0() -> datetime:
    """Just after now: the outbox stamps rows with the database's real now()."""
    return datetime.now(UTC) + timedelta(minutes=1)


@dataclass
class Receiver:
    """A stdlib HTTP server that fails the first ``fail_first`` requests and dedups by key."""

    url: str = ""
    fail_first: int = 0
    requests: list[dict] = field(default_factory=list)
    processed: dict[str, dict] = field(default_factory=dict)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            h = {k.lower(): v for k, v in self.headers.items()}
            rec.requests.append({"headers": h, "body": body})
            if len(rec.requests) <= rec.fail_first:
                self.send_response(503)
            else:
                ok = verify(SECRET, h["x-fieldwatch-timestamp"], body, h["x-fieldwatch-signature"])
                if ok:
                    rec.processed.setdefault(h["idempotency-key"], orjson.loads(body))
                self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()
    thread.join(5)


def _ticket(url: str) -> int:
    with psycopg.connect(url) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('A', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, 's', 's', 48, 11) RETURNING id",
            (client,),
        ).fetchone()[0]
        dev = conn.execute(
            "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'p', 'P') RETURNING id", (site,)
        ).fetchone()[0]
        return conn.execute(
            "INSERT INTO tickets (device_id, problem_code, title, source, external_id) "
            "VALUES (%s, 'X', 'x', 'api', 'CRM-1') RETURNING id",
            (dev,),
        ).fetchone()[0]


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
        add_endpoint(conn, receiver.url, SECRET, events=["ticket.created"])
    ticket = _ticket(db_url)
    receiver.fail_first = 2
    now = _t0()
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
        add_endpoint(conn, receiver.url, SECRET, max_attempts=3)
    _ticket(db_url)
    receiver.fail_first = 1000
    now = _t0()
    for _ in range(6):
        deliver_due(db_url, now=now)
        now += timedelta(hours=1)
    [(event, status, attempts, error)] = _deliveries(db_url)
    assert (event, status, attempts) == ("ticket.created", "dead", 3) and "HTTP 503" in error
    assert len(receiver.requests) == 3


def test_unreachable_receiver_is_retried_not_lost(db_url: str) -> None:
    """A closed port counts as a failed attempt, recorded with the error."""
    with psycopg.connect(db_url) as conn:
        add_endpoint(conn, "http://127.0.0.1:9/hook", SECRET)
    _ticket(db_url)
    assert deliver_due(db_url, now=_t0(), timeout_s=1).retried == 1
    [(_, status, attempts, error)] = _deliveries(db_url)
    assert (status, attempts) == ("pending", 1) and "ConnectError" in error
