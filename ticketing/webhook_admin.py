"""Managing webhook endpoints and their deliveries: data functions for the API.

The secret is write-only: it is stored to sign deliveries (:mod:`ticketing.webhooks`) but no
function here returns it — :class:`Endpoint` has only ``secret_set``. A dead letter can be sent
again with :func:`redeliver`: it goes back to ``pending`` with its attempt count reset and the
SAME idempotency key, so a receiver that did process it after all still sees it once.

Functions take an open connection and run in the caller's transaction; the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

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
) -> None:
    """Raise ValueError naming every bad field (the API maps it to 422)."""
    problems = []
    if url is not None and not url.startswith(("http://", "https://")):
        problems.append(f"url {url!r} must start with http:// or https://")
    if secret is not None and len(secret) < MIN_SECRET:
        problems.append(f"secret must be at least {MIN_SECRET} characters")
    unknown = sorted(set(events or ()) - set(EVENT_TYPES))
    if unknown:
        problems.append(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    if max_attempts is not None and max_attempts < 1:
        problems.append("max_attempts must be at least 1")
    if problems:
        raise ValueError("; ".join(problems))


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
) -> Endpoint:
    validate(url, secret, events, max_attempts)
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
) -> Endpoint:
    """Change the given fields only. A new secret signs deliveries from the next attempt on."""
    validate(url, secret, events, max_attempts)
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
