"""Outbound webhooks under test: a real local HTTP receiver that verifies signatures and dedups by key.

``receiver`` is a fixture (imported by the test modules that use it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import psycopg
import pytest

from ticketing.webhooks import verify

SECRET = "s3cret-s3cret-s3cret"


def t0() -> datetime:
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
    """A :class:`Receiver` listening on a free port for the test; shut down afterwards."""
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


def api_ticket(url: str) -> int:
    """A 'new' ticket from the API (external id CRM-1) on a freshly seeded gold client's device."""
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
