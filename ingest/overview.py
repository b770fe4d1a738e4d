"""The fleet at a glance, for the console's overview: gateways and devices online, and the sites.

A device counts as online when the gateway that reads it is online (ingest knows a gateway's state
from its birth/death and heartbeat, :mod:`ingest.liveness`); a device without a gateway, or whose
gateway's state is still unknown, counts as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import tuple_row


@dataclass(frozen=True, slots=True)
class FleetCounts:
    gateways_online: int
    gateways_offline: int
    gateways_unknown: int
    devices_online: int
    devices_offline: int
    devices_unknown: int


@dataclass(frozen=True, slots=True)
class SitePlace:
    """A site where the map puts it."""

    id: int
    slug: str
    name: str
    latitude: float
    longitude: float
    devices: int


def fleet_counts(conn: psycopg.Connection) -> FleetCounts:
    """Gateways and devices by connection state."""
    with conn.cursor(row_factory=tuple_row) as cur:
        g = cur.execute(
            """SELECT count(*) FILTER (WHERE status = 'online'), count(*) FILTER (WHERE status = 'offline'),
                      count(*) FILTER (WHERE status = 'unknown') FROM gateways"""
        ).fetchone()
        d = cur.execute(
            """SELECT count(*) FILTER (WHERE g.status = 'online'), count(*) FILTER (WHERE g.status = 'offline'),
                      count(*) FILTER (WHERE g.status IS NULL OR g.status = 'unknown')
               FROM devices dv LEFT JOIN gateways g ON g.id = dv.gateway_id"""
        ).fetchone()
    assert g is not None and d is not None
    return FleetCounts(*g, *d)


def site_places(conn: psycopg.Connection) -> list[SitePlace]:
    """Every site with its position and number of devices, by name."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """SELECT s.id, s.slug, s.name, s.latitude, s.longitude, count(d.id)
               FROM sites s LEFT JOIN devices d ON d.site_id = s.id GROUP BY s.id ORDER BY s.name"""
        ).fetchall()
    return [SitePlace(*r) for r in rows]
