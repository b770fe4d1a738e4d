"""One device as a person looks at it: its card (profile, gateway and its status), a device search, and
the data of one chart — raw points for a short range, min/avg/max buckets for a long one.

The console's Device page (``fieldwatch/console/device_page.py``) reads through these functions only.
Every read is bounded: the device search by ``limit``, a chart by :func:`choose_resolution`, which
turns any range into at most :data:`RAW_LIMIT` raw points or about :data:`TARGET_BUCKETS` buckets.
Buckets of a minute or more come from the rollups (``telemetry_1m``/``telemetry_1h``) through
:func:`ingest.timeseries.buckets`, so a week of a 1 s series reads ~10k rollup rows, not 600k points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from fwcore.errors import NotFound
from fwcore.policy import EVERYTHING, Visible
from ingest.queries import Point, series_points
from ingest.timeseries import Bucket, buckets, rollup_for

#: Ranges up to this long are drawn from raw points (if there are not more than :data:`RAW_LIMIT`).
RAW_SPAN = timedelta(hours=2)
#: The most raw points one chart reads; a denser series falls back to buckets.
RAW_LIMIT = 10_000
#: About as many buckets as a wide chart has pixels to show them: more would only be thrown away.
TARGET_BUCKETS = 720
#: Bucket widths, finest first. From a minute on they are multiples of a rollup (rollup_for).
WIDTHS: tuple[timedelta, ...] = tuple(
    timedelta(seconds=s) for s in (1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
)


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a chart reads its range: raw points (``width`` None) or buckets of ``width``."""

    width: timedelta | None

    @property
    def raw(self) -> bool:
        return self.width is None

    @property
    def rollup(self) -> str | None:
        """The rollup the buckets come from (``telemetry_1m``/``telemetry_1h``), None for raw rows."""
        if self.width is None:
            return None
        found = rollup_for(self.width)
        return found[0] if found else None

    @property
    def label(self) -> str:
        if self.width is None:
            return "raw points"
        return f"{_span_label(self.width)} buckets" + (f" ({self.rollup} rollup)" if self.rollup else "")


def choose_resolution(span: timedelta, *, raw_too_dense: bool = False) -> Resolution:
    """Raw points for a range up to :data:`RAW_SPAN`, else the finest width giving ≤ :data:`TARGET_BUCKETS` (pure).

    ``raw_too_dense``: the raw read of a short range hit :data:`RAW_LIMIT`; buckets it is, however short.
    """
    if span <= timedelta(0):
        raise ValueError(f"a chart's range must not be empty (got {span})")
    if span <= RAW_SPAN and not raw_too_dense:
        return Resolution(None)
    for width in WIDTHS:
        if span / width <= TARGET_BUCKETS:
            return Resolution(width)
    return Resolution(WIDTHS[-1])


def _span_label(width: timedelta) -> str:
    s = int(width.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size and s % size == 0:
            return f"{s // size} {unit}"
    return f"{s} s"


@dataclass(frozen=True, slots=True)
class ChartData:
    """What one chart of one series shows over ``[start, end)``: ``points`` (raw) or ``buckets``."""

    series_id: int
    tag: str
    unit: str
    start: datetime
    end: datetime
    resolution: Resolution
    points: list[Point] = field(default_factory=list)
    buckets: list[Bucket] = field(default_factory=list)


def chart_data(conn: psycopg.Connection, series_id: int, start: datetime, end: datetime) -> ChartData:
    """The points or buckets of series ``series_id`` in ``[start, end)``, at the resolution the range calls for."""
    resolution = choose_resolution(end - start)
    if resolution.raw:
        raw = series_points(conn, series_id, start, end, RAW_LIMIT)
        if not raw.truncated:
            return ChartData(series_id, raw.tag, raw.unit, start, end, resolution, points=raw.points)
        resolution = choose_resolution(end - start, raw_too_dense=True)
    row = conn.execute("SELECT tag, unit FROM series WHERE id = %s", (series_id,)).fetchone()
    if row is None:
        raise NotFound("series", series_id)
    assert resolution.width is not None
    got = buckets(conn, series_id, start, end, resolution.width)
    return ChartData(series_id, row[0], row[1], start, end, resolution, buckets=got.buckets)


# --- the device card ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceCard:
    """A device with what its page heads with: site, client, equipment profile, and its gateway's status."""

    id: int
    key: str
    name: str
    equipment_model: str
    serial: str
    profile: str  # as configured, e.g. "pump-p100@2"; '' when none
    site_slug: str
    site_name: str
    client_id: int
    client_name: str
    gateway_slug: str | None
    gateway_name: str | None
    gateway_status: str | None  # unknown, online, offline; None without a gateway
    gateway_status_at: datetime | None

    @property
    def profile_name(self) -> str:
        return self.profile.partition("@")[0]

    @property
    def profile_version(self) -> str:
        """The profile's version after ``@`` (``pump-p100@2`` → ``2``); '' when the profile names none."""
        return self.profile.partition("@")[2]


_CARD_SELECT: LiteralString = """
    SELECT d.id, d.key, COALESCE(NULLIF(d.name, ''), d.key) AS name, d.equipment_model, d.serial, d.profile,
           s.slug AS site_slug, s.name AS site_name, c.id AS client_id, c.name AS client_name,
           g.slug AS gateway_slug, NULLIF(g.name, '') AS gateway_name, g.status AS gateway_status,
           g.status_at AS gateway_status_at
    FROM devices d JOIN sites s ON s.id = d.site_id JOIN clients c ON c.id = s.client_id
    LEFT JOIN gateways g ON g.id = d.gateway_id"""


def device_card(conn: psycopg.Connection, device_id: int, *, visible: Visible = EVERYTHING) -> DeviceCard:
    """The device's card; :class:`NotFound` if there is none, or it belongs to a client ``visible`` hides."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_CARD_SELECT + " WHERE d.id = %s", (device_id,)).fetchone()
    if row is None or (visible.client_id is not None and row["client_id"] != visible.client_id):
        raise NotFound("device", device_id)
    return DeviceCard(**row)


def find_devices(
    conn: psycopg.Connection,
    text: str = "",
    *,
    site: str | None = None,
    visible: Visible = EVERYTHING,
    limit: int = 200,
) -> list[DeviceCard]:
    """Devices whose key, name, model, site or gateway contains ``text`` (any case), at the site with slug
    ``site`` when given, by site then key, at most ``limit``; only one client's when ``visible`` names one."""
    conditions: list[LiteralString] = []
    params: dict[str, Any] = {"limit": limit, "site": site}
    if site:
        conditions.append("s.slug = %(site)s")
    if text.strip():
        conditions.append(
            """(d.key ILIKE %(q)s OR d.name ILIKE %(q)s OR d.equipment_model ILIKE %(q)s OR s.slug ILIKE %(q)s
                OR s.name ILIKE %(q)s OR COALESCE(g.slug, '') ILIKE %(q)s)"""
        )
        escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["q"] = f"%{escaped}%"
    if visible.client_id is not None:
        conditions.append("c.id = %(client)s")
        params["client"] = visible.client_id
    where: LiteralString = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_CARD_SELECT + where + " ORDER BY s.slug, d.key LIMIT %(limit)s", params).fetchall()
    return [DeviceCard(**r) for r in rows]
