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

Where a delivery may go (why: :mod:`fwcore.egress`): to a public address, or one allow-listed in
``FIELDWATCH_WEBHOOK_ALLOWED_TARGETS``, checked at the moment of connecting and connected to as
checked (:class:`ticketing.webhook_transport.PinnedTransport`). No redirect is followed (a 3xx is a
failed attempt: the receiver is the URL the admin gave) and no proxy from the environment is used
(a proxy would connect on our behalf, to an address we did not check).

What a failure tells whom: the stored ``last_error``, which dispatchers read, is one of three fixed
phrases — the endpoint's HTTP status, "no HTTP answer" (refused, reset, timed out, TLS or DNS
failure alike: which ports of a host are open is not theirs to learn) or "refused" by the policy;
the details go to the server log. A URL's password (``https://user:password@host/``) is sent as
Basic auth and shown nowhere: the URL handed to httpx has no user info, and our log lines show
:func:`fwcore.egress.redact_url`'s form.

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

from fwcore.egress import EgressPolicy, EgressRefused, Resolver, redact_url, system_resolver
from fwcore.retry import backoff_delay

from .webhook_transport import PinnedTransport

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


#: What a failed attempt leaves in ``last_error`` (the details are logged, never stored).
NO_ANSWER = "delivery failed: no HTTP answer from the endpoint (details in the server log)"
REFUSED = "delivery refused: the endpoint's address is not public and not allow-listed (details in the server log)"


def answered(code: int) -> str:
    """What a failed attempt leaves in ``last_error`` when the endpoint answered ``code`` (not 2xx)."""
    return f"delivery failed: the endpoint answered HTTP {code}"


#: ``post(url, body, headers) -> status``; raises httpx errors or :class:`~fwcore.egress.EgressRefused`.
Post = Callable[[str, bytes, dict[str, str]], int]


def _without_userinfo(url: str) -> tuple[httpx.URL, httpx.BasicAuth | None]:
    """``url`` without its user info, and that user info as Basic auth (httpx logs the URL it is given)."""
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return parsed, None
    return parsed.copy_with(username=None, password=None), httpx.BasicAuth(parsed.username, parsed.password)


def _poster(client: httpx.Client) -> Post:
    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        target, auth = _without_userinfo(url)
        if auth is None:
            return client.post(target, content=body, headers=headers).status_code
        return client.post(target, content=body, headers=headers, auth=auth).status_code

    return post


def _attempt(post: Post, url: str, body: bytes, headers: dict[str, str]) -> tuple[str, str]:
    """One POST: ``("", "")`` on a 2xx, else the error to store and the details to log."""
    try:
        code = post(url, body, headers)
    except EgressRefused as exc:
        return REFUSED, str(exc)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return NO_ANSWER, f"{type(exc).__name__}: {exc}"
    if 200 <= code < 300:
        return "", ""
    return answered(code), f"HTTP {code}"


def deliver_due(
    db_url: str,
    *,
    now: datetime | None = None,
    limit: int = 100,
    timeout_s: float = 5.0,
    base_s: float = 5.0,
    allow: EgressPolicy = EgressPolicy(),
    resolve: Resolver = system_resolver,
) -> DeliveryRun:
    """Send every pending delivery that is due (see the module docstring).

    ``allow`` is the allow-list of non-public targets (the settings' in :func:`webhook_job`; none by
    default); ``resolve`` answers DNS (tests pass a stand-in).
    """
    now = now or datetime.now(UTC)
    delivered = retried = dead = 0
    transport = PinnedTransport(allow, resolve)
    with (
        httpx.Client(transport=transport, timeout=timeout_s, follow_redirects=False, trust_env=False) as client,
        psycopg.connect(db_url) as conn,
    ):
        post = _poster(client)
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
            error, detail = _attempt(post, url, body, headers)
            attempts += 1
            shown = redact_url(url)
            if error == REFUSED:
                log.warning("webhook %s to %s refused: %s", key, shown, detail)
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
                log.warning("webhook %s to %s dead-lettered after %d attempts: %s", key, shown, attempts, detail)
                dead += 1
            else:
                wait = timedelta(seconds=backoff(attempts, base=base_s))
                conn.execute(
                    "UPDATE webhook_deliveries SET attempts = %s, last_error = %s, next_attempt_at = %s WHERE id = %s",
                    (attempts, error, now + wait, did),
                )
                log.info("webhook %s to %s: attempt %d failed (%s); next in %s", key, shown, attempts, detail, wait)
                retried += 1
    return DeliveryRun(delivered, retried, dead)


def webhook_job(db_url: str) -> DeliveryRun:
    """Scheduler entry point, with the allow-list from the settings."""
    from fwcore.settings import get_settings

    return deliver_due(db_url, allow=EgressPolicy.parse(get_settings().webhook_allowed_targets))
