"""Gauges of what ingest could not store, read from the database when ``/metrics`` is scraped.

Ingest workers count what they dead-letter and hold (``fieldwatch_ingest_*``, per process, since
start); these say what is *there now* — after replays and purges, whichever worker wrote it — so an
alert on them clears when the cause is dealt with. Reading them costs two grouped counts per scrape.
If the database does not answer within a second, the gauges keep their last values and /metrics
still answers. They live beside the pool, not in a router (routers never touch the driver).
"""

from __future__ import annotations

import logging

import psycopg
from prometheus_client import Gauge
from psycopg_pool import ConnectionPool, PoolTimeout

from ingest.deadletters import counts_by_reason
from ingest.discovery import counts_by_state

log = logging.getLogger(__name__)

DEAD_LETTERS = Gauge("fieldwatch_dead_letters", "Dead letters stored now, by reason", ["reason"])
DEAD_LETTER_POINTS = Gauge(
    "fieldwatch_dead_letter_points", "Points kept in the dead letters now, by reason", ["reason"]
)
DISCOVERED = Gauge("fieldwatch_discovered_devices", "Discovered (unregistered) devices, by state", ["state"])
HELD = Gauge("fieldwatch_held_points", "Points held for discovered devices awaiting a decision")

#: Seconds a scrape waits for a pooled connection before it keeps the previous values.
TIMEOUT_S = 1.0


def refresh(pool: ConnectionPool) -> None:
    """Read the counts and set the gauges (reasons no longer present drop out)."""
    try:
        with pool.connection(timeout=min(TIMEOUT_S, pool.timeout)) as conn:
            reasons = counts_by_reason(conn)
            states = counts_by_state(conn)
    except (PoolTimeout, psycopg.Error) as exc:
        log.debug("intake gauges not refreshed: %s", exc)
        return
    DEAD_LETTERS.clear()
    DEAD_LETTER_POINTS.clear()
    for r in reasons:
        DEAD_LETTERS.labels(r.reason).set(r.letters)
        DEAD_LETTER_POINTS.labels(r.reason).set(r.points)
    DISCOVERED.clear()
    held = 0
    for state, devices, points in states:
        DISCOVERED.labels(state).set(devices)
        held += points if state == "pending" else 0
    HELD.set(held)
