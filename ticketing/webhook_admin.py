"""Managing webhook endpoints and their deliveries: data functions for the API.

The secret is write-only: it is stored to sign deliveries (:mod:`ticketing.webhooks`) but no
function here returns it — :class:`Endpoint` has only ``secret_set``. A password in the URL
(``https://user:password@host/``, sent as Basic auth) is shown as ``***``, and a URL sent back with
``***`` as its password keeps the stored one, so an edited copy of what was shown changes nothing else.

An endpoint's URL must reach a public address unless allow-listed (:mod:`fwcore.egress`), on create
and on change: every spelling of an address is read as the address, a name is resolved and each of
its addresses checked. A name that does not resolve now is accepted — the check that counts is made
again at delivery, where the connection is made. A dead letter can be sent
again with :func:`redeliver`: it goes back to ``pending`` with its attempt count reset and the
SAME idempotency key, so a receiver that did process it after all still sees it once.

Functions take an open connection and run in the caller's transaction; the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, field_validator

from fwcore.egress import (
    EgressPolicy,
    EgressRefused,
    Resolver,
    Unresolvable,
    checked_addresses,
    is_host_name,
    literal_address,
    redact_url,
    system_resolver,
)
from ticketing.errors import NotFound

#: Event types the outbox trigger produces (``ticket.<status>``; a new ticket is ``ticket.created``).
EVENT_TYPES = (
    "ticket.created",
    "ticket.assigned",
    "ticket.en_route",
    "ticket.on_site",
    "ticket.resolved",
    "ticket.closed",
    "ticket.cancelled",
)
MIN_SECRET = 16
#: How a URL's password is shown (and, sent back in a change, means "keep the stored one").
MASK = "***"
DeliveryStatus = Literal["pending", "delivered", "dead"]


class NotDeadLetter(ValueError):
    """Re-delivery asked for a delivery that is pending or delivered."""


class Endpoint(BaseModel):
    """A receiver as the API shows it (never the secret)."""

    id: int
    url: str
    events: list[str]  # empty: every event
    enabled: bool
    max_attempts: int
    secret_set: bool
    created_at: datetime
    pending: int
    dead: int

    @field_validator("url")
    @classmethod
    def _mask_password(cls, url: str) -> str:
        return redact_url(url)


class Delivery(BaseModel):
    id: int
    endpoint_id: int
    event: str
    idempotency_key: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    delivered_at: datetime | None


_ENDPOINT = """
SELECT e.id, e.url, e.events, e.active AS enabled, e.max_attempts, length(e.secret) > 0 AS secret_set, e.created_at,
       (SELECT count(*) FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.status = 'dead') AS dead
FROM webhook_endpoints e
"""
_DELIVERY = """SELECT id, endpoint_id, event, idempotency_key, payload, status, attempts, next_attempt_at,
                      last_error, created_at, delivered_at FROM webhook_deliveries"""


def validate(
    url: str | None = None,
    secret: str | None = None,
    events: Sequence[str] | None = None,
    max_attempts: int | None = None,
    *,
    allow: EgressPolicy = EgressPolicy(),
    resolve: Resolver = system_resolver,
) -> None:
    """Raise ValueError naming every bad field (the API maps it to 422); never echoes a secret or password.

    ``allow`` is the allow-list of non-public targets (from the settings); ``resolve`` answers DNS.
    """
    problems = []
    if url is not None:
        problems += _url_problems(url, allow, resolve)
    if secret is not None and len(secret) < MIN_SECRET:
        problems.append(f"secret must be at least {MIN_SECRET} characters")
    unknown = sorted(set(events or ()) - set(EVENT_TYPES))
    if unknown:
        problems.append(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    if max_attempts is not None and max_attempts < 1:
        problems.append("max_attempts must be at least 1")
    if problems:
        raise ValueError("; ".join(problems))


def _url_problems(url: str, allow: EgressPolicy, resolve: Resolver) -> list[str]:
    """What is wrong with ``url`` as httpx — which makes the connection — reads it."""
    shown = redact_url(url)
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError):
        return [_literal_refusal(url, allow) or f"url {shown!r} is not a valid URL"]
    if parsed.scheme not in ("http", "https"):
        return [f"url {shown!r} must start with http:// or https://"]
    host = parsed.raw_host.decode("ascii")
    if not host:
        return [f"url {shown!r} has no host"]
    if literal_address(host) is None and not is_host_name(host):
        return [f"url host {host!r} is neither a host name nor an IP address"]
    if port is not None and not 1 <= port <= 65535:
        return [f"url port {port} is not 1-65535"]
    try:
        checked_addresses(host, port or (443 if parsed.scheme == "https" else 80), allow, resolve)
    except EgressRefused as exc:
        return [str(exc)]
    except Unresolvable:
        pass  # checked where it counts: at delivery
    return []


def _literal_refusal(url: str, allow: EgressPolicy) -> str | None:
    """Why a URL httpx cannot read would reach a non-public address (``http://0177.0.0.1/``), if it would."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host or literal_address(host) is None:
        return None
    try:
        checked_addresses(host, 0, allow)
    except EgressRefused as exc:
        return str(exc)
    return None


def _keep_password(url: str, stored: str) -> str:
    """``url`` with the stored URL's password where it shows the mask (see the module docstring)."""
    try:
        new, old = httpx.URL(url), httpx.URL(stored)
    except httpx.InvalidURL:
        return url
    if new.password != MASK or not old.password:
        return url
    return str(new.copy_with(username=new.username, password=old.password))


def list_endpoints(conn: psycopg.Connection) -> list[Endpoint]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_ENDPOINT + " ORDER BY e.id")
        return [Endpoint(**r) for r in cur.fetchall()]


def get_endpoint(conn: psycopg.Connection, endpoint_id: int) -> Endpoint:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_ENDPOINT + " WHERE e.id = %s", (endpoint_id,))
        row = cur.fetchone()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return Endpoint(**row)


def create_endpoint(
    conn: psycopg.Connection,
    *,
    url: str,
    secret: str,
    events: Sequence[str] = (),
    enabled: bool = True,
    max_attempts: int = 8,
    allow: EgressPolicy = EgressPolicy(),
    resolve: Resolver = system_resolver,
) -> Endpoint:
    """Add a receiver; ``allow`` and ``resolve`` as for :func:`validate`."""
    validate(url, secret, events, max_attempts, allow=allow, resolve=resolve)
    row = conn.execute(
        "INSERT INTO webhook_endpoints (url, secret, events, active, max_attempts) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id",
        (url, secret, sorted(set(events)), enabled, max_attempts),
    ).fetchone()
    assert row is not None  # INSERT … RETURNING of one row
    return get_endpoint(conn, row[0])


def update_endpoint(
    conn: psycopg.Connection,
    endpoint_id: int,
    *,
    url: str | None = None,
    secret: str | None = None,
    events: Sequence[str] | None = None,
    enabled: bool | None = None,
    max_attempts: int | None = None,
    allow: EgressPolicy = EgressPolicy(),
    resolve: Resolver = system_resolver,
) -> Endpoint:
    """Change the given fields only. A new secret signs deliveries from the next attempt on.

    A URL whose password is the mask keeps the stored password; ``allow`` and ``resolve`` as for
    :func:`validate`.
    """
    validate(url, secret, events, max_attempts, allow=allow, resolve=resolve)
    if url is not None:
        stored = conn.execute("SELECT url FROM webhook_endpoints WHERE id = %s", (endpoint_id,)).fetchone()
        if stored is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        url = _keep_password(url, stored[0])
    sets: dict[str, Any] = {
        "url": url,
        "secret": secret,
        "active": enabled,
        "max_attempts": max_attempts,
        "events": sorted(set(events)) if events is not None else None,
    }
    sets = {k: v for k, v in sets.items() if v is not None}
    if sets:
        cols = ", ".join(f"{k} = %({k})s" for k in sets)  # keys are the fixed names above
        cur = conn.execute(
            f"UPDATE webhook_endpoints SET {cols} WHERE id = %(id)s",
            {**sets, "id": endpoint_id},
        )
        if cur.rowcount != 1:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
    return get_endpoint(conn, endpoint_id)


def delete_endpoint(conn: psycopg.Connection, endpoint_id: int) -> None:
    """Remove the endpoint and its delivery history (disable it instead to keep the history)."""
    if conn.execute("DELETE FROM webhook_endpoints WHERE id = %s", (endpoint_id,)).rowcount != 1:
        raise NotFound(f"no webhook endpoint {endpoint_id}")


def list_deliveries(
    conn: psycopg.Connection,
    *,
    endpoint_id: int | None = None,
    status: DeliveryStatus | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Delivery]:
    """Deliveries, newest first; filtered by endpoint and status when given."""
    where: list[str] = []
    params: list[int | str] = []
    if endpoint_id is not None:
        where.append("endpoint_id = %s")
        params.append(endpoint_id)
    if status is not None:
        where.append("status = %s")
        params.append(status)
    sql = _DELIVERY + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT %s OFFSET %s"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, (*params, limit, offset))
        return [Delivery(**r) for r in cur.fetchall()]


def redeliver(conn: psycopg.Connection, delivery_id: int) -> Delivery:
    """Send a dead letter again at the next delivery run: back to pending, attempts reset, same key.

    Refused (:class:`NotDeadLetter`) for a delivery that is not dead: a pending one is already being retried and a
    delivered one reached its receiver.
    """
    row = conn.execute("SELECT status FROM webhook_deliveries WHERE id = %s FOR UPDATE", (delivery_id,)).fetchone()
    if row is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    if row[0] != "dead":
        raise NotDeadLetter(f"delivery {delivery_id} is {row[0]}, not dead; only dead letters can be re-delivered")
    conn.execute(
        """UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
                  last_error = 're-delivery requested; before: ' || last_error WHERE id = %s""",
        (delivery_id,),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_DELIVERY + " WHERE id = %s", (delivery_id,))
        delivery = cur.fetchone()
        assert delivery is not None  # the row locked above
        return Delivery(**delivery)
