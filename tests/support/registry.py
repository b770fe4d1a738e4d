"""Registry rows for one test (a client, a site, a gateway, devices) and the batches such a gateway publishes.

Every name carries the test's ``uid``: the database server and the broker are shared,
and ingest workers find gateways by their slugs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from fwcore.contract import Batch, Point, topic

#: "Now" for this test run, in epoch ms: points are stamped relative to it (``pts`` starts a minute before).
NOW_MS = int(time.time() * 1000)


@dataclass(frozen=True)
class Registered:
    """Registry rows inserted for one test."""

    site: str
    gateway: str
    gateway_id: int
    devices: dict[str, int]

    def topic(self, kind: str = "telemetry") -> str:
        return topic(self.site, self.gateway, kind)

    def batch(self, seq: int, points: list[Point], **kw: object) -> Batch:
        return Batch(gateway=self.gateway, site=self.site, seq=seq, points=points, **kw)  # type: ignore[arg-type]


def register(db_url: str, uid: str, devices: tuple[str, ...] = ("pump-1", "pump-2")) -> Registered:
    """Insert a client (segment gold), a site, a gateway and devices named with ``uid``."""
    site, gateway = f"site-{uid}", f"gw-{uid}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        (client_id,) = conn.execute(
            "INSERT INTO clients (name, segment) VALUES (%s, 'gold') RETURNING id", (f"client-{uid}",)
        ).fetchone()  # type: ignore[misc]
        (site_id,) = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude)"
            " VALUES (%s, %s, %s, 41.9, -87.6) RETURNING id",
            (client_id, site, f"Site {uid}"),
        ).fetchone()  # type: ignore[misc]
        (gw_id,) = conn.execute(
            "INSERT INTO gateways (site_id, slug) VALUES (%s, %s) RETURNING id", (site_id, gateway)
        ).fetchone()  # type: ignore[misc]
        ids = {}
        for key in devices:
            ids[key] = add_device(conn, site_id, gw_id, key)
    return Registered(site, gateway, gw_id, ids)


def add_device(conn: psycopg.Connection, site_id: int | None, gateway_id: int, key: str) -> int:
    """Register one more device on a gateway (``site_id`` None: the gateway's site)."""
    if site_id is None:
        (site_id,) = conn.execute("SELECT site_id FROM gateways WHERE id = %s", (gateway_id,)).fetchone()  # type: ignore[misc]
    (dev_id,) = conn.execute(
        "INSERT INTO devices (site_id, gateway_id, key, equipment_model) VALUES (%s, %s, %s, 'P100') RETURNING id",
        (site_id, gateway_id, key),
    ).fetchone()  # type: ignore[misc]
    return dev_id


def pts(device: str, tag: str, n: int, *, start_ms: int = NOW_MS - 60_000, value: float = 1.0) -> list[Point]:
    """``n`` points one second apart for one device and tag."""
    return [Point(device, tag, start_ms + i * 1000, value + i) for i in range(n)]
