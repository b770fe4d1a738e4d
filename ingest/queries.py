"""Reading the asset registry and telemetry the way people look at them: devices with their site
and client, the newest value of each series, raw points over a range, gateways and their health.

Each function takes an open connection and reads only; a missing id raises
:class:`fwcore.errors.NotFound`. Lists return a :class:`fwcore.paging.Page`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from fwcore.devices import resolve_device_ref
from fwcore.errors import NotFound
from fwcore.paging import Page, Row, fetch_page
from fwcore.policy import EVERYTHING, Visible


@dataclass(frozen=True, slots=True)
class SiteRef:
    id: int
    slug: str
    name: str
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class ClientRef:
    id: int
    name: str
    segment: str


@dataclass(frozen=True, slots=True)
class Device:
    """A device with the site it stands at and the client that owns the site."""

    id: int
    key: str
    name: str
    equipment_model: str
    serial: str
    attributes: dict[str, Any]
    gateway: str | None  # slug of the gateway that polls it
    site: SiteRef
    client: ClientRef
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The newest stored point of one series; time/value/quality are None if it has none yet."""

    series_id: int
    tag: str
    unit: str
    time: datetime | None
    value: float | None
    quality: int | None


@dataclass(frozen=True, slots=True)
class DeviceLatest:
    device_id: int
    values: list[LatestValue]


@dataclass(frozen=True, slots=True)
class Point:
    time: datetime
    value: float
    quality: int


@dataclass(frozen=True, slots=True)
class SeriesPoints:
    """Points of one series with ``from_ <= time < to``, oldest first; ``truncated`` if more lie in the range."""

    series_id: int
    device_id: int
    tag: str
    unit: str
    from_: datetime
    to: datetime
    limit: int
    truncated: bool
    points: list[Point]


@dataclass(frozen=True, slots=True)
class GatewaySummary:
    """A gateway with its connection health (birth/death status, committed sequence, missing sequences)."""

    id: int
    slug: str
    name: str
    site: str
    status: str
    status_at: datetime | None
    last_seq: int | None
    seq_gaps: int
    created_at: datetime


def ping(conn: psycopg.Connection) -> None:
    """Raise unless the database answers and is migrated (a psycopg error says which)."""
    conn.execute("SELECT 1 FROM schema_migrations LIMIT 1")


# --- devices ----------------------------------------------------------------------------------

_DEVICE_FROM: LiteralString = """
    devices d JOIN sites s ON s.id = d.site_id JOIN clients c ON c.id = s.client_id
    LEFT JOIN gateways g ON g.id = d.gateway_id"""
_DEVICE_SELECT: LiteralString = (
    """SELECT d.id, d.key, d.name, d.equipment_model, d.serial, d.attributes, d.created_at, g.slug AS gateway,
              s.id AS site_id, s.slug AS site_slug, s.name AS site_name, s.latitude, s.longitude,
              c.id AS client_id, c.name AS client_name, c.segment
       FROM"""
    + _DEVICE_FROM
)


def _device(r: Row) -> Device:
    return Device(
        id=r["id"],
        key=r["key"],
        name=r["name"],
        equipment_model=r["equipment_model"],
        serial=r["serial"],
        attributes=r["attributes"],
        gateway=r["gateway"],
        created_at=r["created_at"],
        site=SiteRef(r["site_id"], r["site_slug"], r["site_name"], r["latitude"], r["longitude"]),
        client=ClientRef(r["client_id"], r["client_name"], r["segment"]),
    )


def list_devices(
    conn: psycopg.Connection,
    *,
    site: str | None = None,
    site_id: int | None = None,
    ref: str | None = None,
    visible: Visible = EVERYTHING,
    limit: int | None = None,
    offset: int = 0,
) -> Page[Device]:
    """Devices in id order, at the site with slug ``site`` and/or id ``site_id`` when given, the one device
    ``ref`` names (id, ``site/key``, ``gateway/key`` or a unique key: :func:`fwcore.devices.resolve_device_ref`,
    which raises when it names none or several), and of one client only when ``visible`` names one (the
    permission policy's ``client`` scope)."""
    if visible.technician_id is not None:
        raise ValueError("devices belong to no technician: a technician-scoped device list is not supported")
    conditions: list[LiteralString] = []
    if visible.client_id is not None:
        conditions.append("s.client_id = %(scope_client)s")
    if site is not None:
        conditions.append("s.slug = %(site)s")
    if site_id is not None:
        conditions.append("s.id = %(site_id)s")
    device_id = resolve_device_ref(conn, ref) if ref is not None else None
    if device_id is not None:
        conditions.append("d.id = %(device_id)s")
    return fetch_page(
        conn,
        _DEVICE_SELECT,
        _DEVICE_FROM,
        conditions,
        "d.id",
        {"site": site, "site_id": site_id, "device_id": device_id, "scope_client": visible.client_id},
        _device,
        limit=limit,
        offset=offset,
    )


def get_device(conn: psycopg.Connection, device_id: int) -> Device:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_DEVICE_SELECT + " WHERE d.id = %s", (device_id,)).fetchone()
    if row is None:
        raise NotFound("device", device_id)
    return _device(row)


def device_latest(conn: psycopg.Connection, device_id: int) -> DeviceLatest:
    """Newest point of every series of the device (one index probe per series), series by tag."""
    if conn.execute("SELECT 1 FROM devices WHERE id = %s", (device_id,)).fetchone() is None:
        raise NotFound("device", device_id)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT s.id AS series_id, s.tag, s.unit, t.time, t.value, t.quality
               FROM series s
               LEFT JOIN LATERAL (
                   SELECT time, value, quality FROM telemetry
                   WHERE series_id = s.id ORDER BY time DESC LIMIT 1
               ) t ON true
               WHERE s.device_id = %s
               ORDER BY s.tag""",
            (device_id,),
        ).fetchall()
    return DeviceLatest(device_id=device_id, values=[LatestValue(**r) for r in rows])


def latest_by_device_key(conn: psycopg.Connection, tags: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{device key: {tag: newest value}}`` over every device, for the series whose tag is in ``tags``."""
    latest: dict[str, dict[str, float]] = {}
    for key, tag, value in conn.execute(
        """SELECT d.key, s.tag, t.value FROM devices d JOIN series s ON s.device_id = d.id
           JOIN LATERAL (SELECT value FROM telemetry WHERE series_id = s.id ORDER BY time DESC LIMIT 1) t
             ON true
           WHERE s.tag = ANY(%s)""",
        (list(tags),),
    ):
        latest.setdefault(key, {})[tag] = value
    return latest


def count_points(conn: psycopg.Connection) -> int:
    """Every stored telemetry point (a full count: meant for demos and small databases)."""
    row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    assert row is not None
    return row[0]


def series_points(conn: psycopg.Connection, series_id: int, start: datetime, end: datetime, limit: int) -> SeriesPoints:
    """Points with ``start <= time < end``, oldest first, at most ``limit`` of them."""
    series = conn.execute("SELECT device_id, tag, unit FROM series WHERE id = %s", (series_id,)).fetchone()
    if series is None:
        raise NotFound("series", series_id)
    rows = conn.execute(
        """SELECT time, value, quality FROM telemetry
           WHERE series_id = %s AND time >= %s AND time < %s
           ORDER BY time LIMIT %s""",
        (series_id, start, end, limit + 1),
    ).fetchall()
    device_id, tag, unit = series
    return SeriesPoints(
        series_id=series_id,
        device_id=device_id,
        tag=tag,
        unit=unit,
        from_=start,
        to=end,
        limit=limit,
        truncated=len(rows) > limit,
        points=[Point(t, v, q) for t, v, q in rows[:limit]],
    )


# --- gateways ---------------------------------------------------------------------------------

_GATEWAY_FROM: LiteralString = " gateways g JOIN sites s ON s.id = g.site_id"


def list_gateways(
    conn: psycopg.Connection,
    *,
    site: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Page[GatewaySummary]:
    """Gateways in id order, at site ``site`` (slug) and/or in ``status`` when given."""
    conditions: list[LiteralString] = []
    if site is not None:
        conditions.append("s.slug = %(site)s")
    if status is not None:
        conditions.append("g.status = %(status)s")
    return fetch_page(
        conn,
        """SELECT g.id, g.slug, g.name, s.slug AS site, g.status, g.status_at, g.last_seq, g.seq_gaps,
                  g.created_at FROM"""
        + _GATEWAY_FROM,
        _GATEWAY_FROM,
        conditions,
        "g.id",
        {"site": site, "status": status},
        lambda r: GatewaySummary(**r),
        limit=limit,
        offset=offset,
    )
