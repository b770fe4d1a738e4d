"""Outbound webhooks for ticket events: signed, retried with backoff, deduplicated, dead-lettered.

Events are written to the ``webhook_deliveries`` outbox by a trigger in the same transaction as
the ticket's status change (so no event exists for a change that was rolled back).
:func:`deliver_due` (a scheduled job, every 10 s) POSTs what is due:

* body: the event JSON; headers ``X-Fieldwatch-Event``, ``Idempotency-Key`` (the same on every retry
  of one event — receivers deduplicate on it), ``X-Fieldwatch-Timestamp`` and
  ``X-Fieldwatch-Signature: sha256=<hex>`` = HMAC-SHA256(secret, "<timestamp>.<body>");
* a 2xx answer marks it delivered; anything else (or no answer) schedules a retry after
  :func:`backoff` (exponential, capped, with jitter); after the endpoint's ``max_attempts`` it is
  dead-lettered (``status = 'dead'``, ``last_error`` says why) — never dropped silently;
* a disabled endpoint (``active = false``) gets no new events, and its pending ones wait until it
  is enabled again.

Endpoints, deliveries and re-delivery of dead letters are managed in :mod:`ticketing.webhook_admin`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
import orjson
import psycopg

from fwcore.retry import backoff_delay

log = logging.getLogger(__name__)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does: constant-time comparison of the expected signature."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


#: Seconds to wait after failed delivery ``attempt`` (1-based): 5 s doubling to an hour, ±20 %.
backoff = partial(backoff_delay, base=5.0, cap=3600.0)


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    delivered: int
    retried: int
    dead: int


Post = Callable[[str, bytes, dict[str, str]], int]


def _httpx_post(timeout_s: float) -> Post:
    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        return httpx.post(url, content=body, headers=headers, timeout=timeout_s).status_code

    return post


def deliver_due(
    db_url: str,
    *,
    now: datetime | None = None,
    limit: int = 100,
    timeout_s: float = 5.0,
    post: Post | None = None,
    base_s: float = 5.0,
) -> DeliveryRun:
    """Send every pending delivery that is due (see the module docstring)."""
    now = now or datetime.now(UTC)
    post = post or _httpx_post(timeout_s)
    delivered = retried = dead = 0
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """SELECT d.id, d.event, d.idempotency_key, d.payload, d.attempts, e.url, e.secret, e.max_attempts
               FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
               WHERE d.status = 'pending' AND d.next_attempt_at <= %s AND e.active
               ORDER BY d.next_attempt_at, d.id LIMIT %s
               FOR UPDATE OF d SKIP LOCKED""",
            (now, limit),
        ).fetchall()
        for did, event, key, payload, attempts, url, secret, max_attempts in rows:
            body = orjson.dumps(payload)
            ts = str(int(now.timestamp()))
            headers = {
                "Content-Type": "application/json",
                "X-Fieldwatch-Event": event,
                "Idempotency-Key": key,
                "X-Fieldwatch-Timestamp": ts,
                "X-Fieldwatch-Signature": sign(secret, ts, body),
            }
            try:
                code = post(url, body, headers)
                error = "" if 200 <= code < 300 else f"HTTP {code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            attempts += 1
            if not error:
                conn.execute(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = %s, delivered_at = %s, "
                    "last_error = '' WHERE id = %s",
                    (attempts, now, did),
                )
                delivered += 1
            elif attempts >= max_attempts:
                conn.execute(
                    "UPDATE webhook_deliveries SET status = 'dead', attempts = %s, last_error = %s WHERE id = %s",
                    (attempts, f"gave up after {attempts} attempts: {error}", did),
                )
                log.warning("webhook %s to %s dead-lettered after %d attempts: %s", key, url, attempts, error)
                dead += 1
            else:
                wait = timedelta(seconds=backoff(attempts, base=base_s))
                conn.execute(
                    "UPDATE webhook_deliveries SET attempts = %s, last_error = %s, next_attempt_at = %s WHERE id = %s",
                    (attempts, error, now + wait, did),
                )
                retried += 1
    return DeliveryRun(delivered, retried, dead)


def webhook_job(db_url: str) -> DeliveryRun:
    """Scheduler entry point."""
    return deliver_due(db_url)
