"""Telemetry queries beyond raw points: time buckets, data gaps and CSV export.

Buckets use ``date_bin`` (PostgreSQL 14+, no TimescaleDB needed) aligned on the Unix epoch, so a
5-minute bucket always starts at :00, :05, ... UTC whichever range is asked for. Gaps are found
from consecutive points: the series' normal cadence is the median interval between its points in
the range, and a gap is any interval longer than ``factor`` times that cadence (the point just before
the range and the one just after it are included, so a gap straddling an edge is reported whole).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from itertools import pairwise

import psycopg
from pydantic import BaseModel, Field

from .errors import Invalid, NotFound

MAX_BUCKETS = 10_000
_SPAN = re.compile(r"^(?P<n>[1-9][0-9]{0,6})(?P<unit>s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Bucket(BaseModel):
    time: datetime = Field(description="start of the bucket")
    count: int
    min: float
    max: float
    avg: float
    last: float = Field(description="the newest value in the bucket")


class SeriesBuckets(BaseModel):
    series_id: int
    bucket_s: int
    from_: datetime = Field(alias="from")
    to: datetime
    buckets: list[Bucket]


class Gap(BaseModel):
    start: datetime = Field(description="time of the last point before the gap")
    end: datetime = Field(description="time of the first point after it (or the end of the range if still open)")
    seconds: float
    open: bool = Field(description="true if no point has arrived since `start`")


class SeriesGaps(BaseModel):
    series_id: int
    from_: datetime = Field(alias="from")
    to: datetime
    cadence_s: float | None = Field(description="normal interval between points (median), or the one given")
    threshold_s: float | None
    gaps: list[Gap]


def parse_span(text: str, *, loc: tuple[str, ...] = ("query", "bucket")) -> timedelta:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` -> a timedelta; anything else is a 422 naming the parameter."""
    found = _SPAN.match(text.strip())
    if not found:
        raise Invalid(f"{text!r} is not a duration; write a number and a unit: 30s, 5m, 1h, 1d", loc=loc)
    return timedelta(seconds=int(found["n"]) * _UNIT_S[found["unit"]])


def _require_series(conn: psycopg.Connection, series_id: int) -> None:
    if conn.execute("SELECT 1 FROM series WHERE id = %s", (series_id,)).fetchone() is None:
        raise NotFound("series", series_id)


def buckets(
    conn: psycopg.Connection, series_id: int, start: datetime, end: datetime, width: timedelta
) -> SeriesBuckets:
    """min/max/avg/last/count per ``width`` bucket in ``[start, end)``; empty buckets are left out."""
    _require_series(conn, series_id)
    n = (end - start) / width
    if n > MAX_BUCKETS:
        raise Invalid(
            f"{int(n)} buckets of {width} in this range; at most {MAX_BUCKETS}: widen the bucket or narrow the range",
            loc=("query", "bucket"),
        )
    rows = conn.execute(
        """SELECT date_bin(%(w)s, time, timestamptz 'epoch') AS b, count(*), min(value), max(value), avg(value),
                  (array_agg(value ORDER BY time DESC))[1]
           FROM telemetry WHERE series_id = %(s)s AND time >= %(start)s AND time < %(end)s
           GROUP BY b ORDER BY b""",
        {"w": width, "s": series_id, "start": start, "end": end},
    ).fetchall()
    return SeriesBuckets(
        series_id=series_id,
        bucket_s=int(width.total_seconds()),
        **{"from": start},
        to=end,
        buckets=[Bucket(time=b, count=c, min=lo, max=hi, avg=avg, last=last) for b, c, lo, hi, avg, last in rows],
    )


def gaps(
    conn: psycopg.Connection,
    series_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    factor: float,
    cadence_s: float | None = None,
) -> SeriesGaps:
    """Intervals without data longer than ``factor`` × the cadence that overlap ``[start, end)``."""
    _require_series(conn, series_id)
    times = [
        t
        for (t,) in conn.execute(
            """(SELECT time FROM telemetry WHERE series_id = %(s)s AND time < %(start)s ORDER BY time DESC LIMIT 1)
               UNION ALL
               (SELECT time FROM telemetry WHERE series_id = %(s)s AND time >= %(start)s AND time < %(end)s
                ORDER BY time)
               UNION ALL
               (SELECT time FROM telemetry WHERE series_id = %(s)s AND time >= %(end)s ORDER BY time LIMIT 1)""",
            {"s": series_id, "start": start, "end": end},
        )
    ]
    return SeriesGaps(
        series_id=series_id, **{"from": start}, to=end, **find_gaps(times, start, end, now, factor, cadence_s)
    )


def find_gaps(
    times: list[datetime], start: datetime, end: datetime, now: datetime, factor: float, cadence_s: float | None
) -> dict:
    """Pure part of :func:`gaps`: ``times`` sorted, possibly with one point before ``start`` and one after ``end``."""
    if cadence_s is None:
        inside = [t for t in times if start <= t < end]
        steps = sorted((b - a).total_seconds() for a, b in pairwise(inside))
        steps = [s for s in steps if s > 0]
        if not steps:  # fewer than two points: no cadence to compare with
            return {"cadence_s": None, "threshold_s": None, "gaps": []}
        mid = len(steps) // 2
        cadence_s = steps[mid] if len(steps) % 2 else (steps[mid - 1] + steps[mid]) / 2
    threshold = cadence_s * factor
    found: list[Gap] = []
    for a, b in pairwise(times):
        if (b - a).total_seconds() > threshold and b > start and a < end:
            found.append(Gap(start=a, end=b, seconds=(b - a).total_seconds(), open=False))
    horizon = min(end, now)
    if times and times[-1] < horizon and (horizon - times[-1]).total_seconds() > threshold:
        last = times[-1]
        found.append(Gap(start=last, end=horizon, seconds=(horizon - last).total_seconds(), open=True))
    return {"cadence_s": cadence_s, "threshold_s": threshold, "gaps": found}


def export_csv(conn: psycopg.Connection, series_id: int, start: datetime, end: datetime, limit: int) -> bytes:
    """``time,value,quality`` rows (with a header) in ``[start, end)``, oldest first, built by ``COPY``."""
    _require_series(conn, series_id)
    out = bytearray()
    query = """COPY (SELECT time, value, quality FROM telemetry
                     WHERE series_id = %s AND time >= %s AND time < %s ORDER BY time LIMIT %s)
               TO STDOUT (FORMAT CSV, HEADER)"""
    with conn.cursor() as cur, cur.copy(query, (series_id, start, end, limit)) as copy:
        for chunk in copy:
            out += chunk
    return bytes(out)
