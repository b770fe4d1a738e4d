"""Telemetry over time: time buckets (min/max/avg/last/count), data gaps and CSV export.

Buckets use ``date_bin`` (PostgreSQL 14+, no TimescaleDB needed) aligned on the Unix epoch, so a
5-minute bucket always starts at :00, :05, ... UTC whichever range is asked for. Whole buckets
come from the rollups (``telemetry_1m``/``telemetry_1h``, migration 0004) where they are complete,
raw rows fill the rest; :func:`plan_ranges` decides which (pure).

Gaps are found from consecutive points: the series' normal cadence is the median interval between
its points in the range, and a gap is any interval longer than ``factor`` times that cadence (the
point just before the range and the one just after it are included, so a gap straddling an edge is
reported whole); :func:`find_gaps` is that rule, pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import psycopg

from fwcore.errors import Invalid, NotFound
from ingest.rollups import ROLLUP_LAG_S

MAX_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Bucket:
    time: datetime  # start of the bucket
    count: int
    min: float
    max: float
    avg: float
    last: float  # the newest value in the bucket


@dataclass(frozen=True, slots=True)
class SeriesBuckets:
    series_id: int
    bucket_s: int
    from_: datetime
    to: datetime
    buckets: list[Bucket]


@dataclass(frozen=True, slots=True)
class Gap:
    start: datetime  # time of the last point before the gap
    end: datetime  # time of the first point after it (or the end of the range if still open)
    seconds: float
    open: bool  # no point has arrived since ``start``


@dataclass(frozen=True, slots=True)
class SeriesGaps:
    series_id: int
    from_: datetime
    to: datetime
    cadence_s: float | None  # normal interval between points (median), or the one given
    threshold_s: float | None
    gaps: list[Gap]


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
    rollup = rollup_for(width)
    exact_before, dirty = _rollup_state(conn, rollup, start, end) if rollup else (None, [])
    lo, hi, raw = plan_ranges(start, end, rollup, exact_before, dirty)
    # Rollup rows for the complete whole buckets inside the range, raw rows for the rest (edges, the
    # recent past not rolled up yet, hours with late data): equal to aggregating raw telemetry.
    rollup_part = (
        f"""SELECT bucket AS t, n, vmin, vmax, vsum, vlast, last_time FROM {rollup[0]}
            WHERE series_id = %(s)s AND bucket >= %(lo)s AND bucket < %(hi)s
              AND NOT date_bin(interval '1 hour', bucket, timestamptz 'epoch') = ANY(%(dirty)s)
            UNION ALL"""
        if rollup and lo < hi
        else ""
    )
    rows = conn.execute(
        f"""WITH parts AS (
                {rollup_part}
                SELECT x.time, 1, x.value, x.value, x.value, x.value, x.time
                FROM unnest(%(rf)s::timestamptz[], %(rt)s::timestamptz[]) AS r(f, t)
                CROSS JOIN LATERAL (SELECT time, value FROM telemetry
                                    WHERE series_id = %(s)s AND time >= r.f AND time < r.t) AS x
            )
            SELECT date_bin(%(w)s, t, timestamptz 'epoch') AS b, sum(n)::int8, min(vmin), max(vmax),
                   sum(vsum) / sum(n), (array_agg(vlast ORDER BY last_time DESC))[1]
            FROM parts AS p(t, n, vmin, vmax, vsum, vlast, last_time)
            GROUP BY b ORDER BY b""",
        {
            "w": width,
            "s": series_id,
            "lo": lo,
            "hi": hi,
            "dirty": dirty,
            "rf": [f for f, _ in raw],
            "rt": [t for _, t in raw],
        },
    ).fetchall()
    return SeriesBuckets(
        series_id=series_id,
        bucket_s=int(width.total_seconds()),
        from_=start,
        to=end,
        buckets=[Bucket(time=b, count=c, min=lo, max=hi, avg=avg, last=last) for b, c, lo, hi, avg, last in rows],
    )


#: Rollups by width, coarsest first: (relation, bucket width). Migration 0004 makes them tables or
#: TimescaleDB continuous aggregates with the same columns.
ROLLUPS: tuple[tuple[str, timedelta], ...] = (
    ("telemetry_1h", timedelta(hours=1)),
    ("telemetry_1m", timedelta(minutes=1)),
)
_HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rollup_for(width: timedelta) -> tuple[str, timedelta] | None:
    """The coarsest rollup whose buckets tile ``width`` buckets exactly (a divisor of it), else None (raw)."""
    for name, size in ROLLUPS:
        if width >= size and width % size == timedelta(0):
            return name, size
    return None


def _floor(t: datetime, size: timedelta) -> datetime:
    return t - (t - _EPOCH) % size


def _ceil(t: datetime, size: timedelta) -> datetime:
    f = _floor(t, size)
    return f if f == t else f + size


def plan_ranges(
    start: datetime,
    end: datetime,
    rollup: tuple[str, timedelta] | None,
    exact_before: datetime | None,
    dirty: list[datetime],
) -> tuple[datetime, datetime, list[tuple[datetime, datetime]]]:
    """``(lo, hi, raw ranges)``: rollup buckets in ``[lo, hi)`` minus ``dirty`` hours, raw rows elsewhere (pure).

    ``lo``/``hi`` are ``start``/``end`` rounded inwards to the rollup width and capped at
    ``exact_before`` (the rollup is complete only before it); the raw ranges cover the rest of
    ``[start, end)``: the edges and each dirty hour inside ``[lo, hi)``.
    """
    if rollup is None or exact_before is None:
        return start, start, [(start, end)]
    size = rollup[1]
    lo = _ceil(start, size)
    hi = _floor(min(end, exact_before), size)
    if hi <= lo:
        return start, start, [(start, end)]
    ranges = [(start, lo)] if start < lo else []
    for h in sorted(dirty):
        f, t = max(h, lo), min(h + _HOUR, hi)
        if f < t:
            if ranges and ranges[-1][1] >= f:
                ranges[-1] = (ranges[-1][0], max(ranges[-1][1], t))
            else:
                ranges.append((f, t))
    if hi < end:
        if ranges and ranges[-1][1] >= hi:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((hi, end))
    return lo, hi, ranges


def _rollup_state(
    conn: psycopg.Connection, rollup: tuple[str, timedelta], start: datetime, end: datetime
) -> tuple[datetime | None, list[datetime]]:
    """Where ``rollup`` is complete up to, and the flagged hours in range (None: no rollups here)."""
    if conn.execute("SELECT to_regclass('telemetry_rollup_state')").fetchone() == (None,):
        return None, []  # a database from before migration 0004
    # Tables: complete up to the job's last run minus its lag. Continuous aggregates ('infinity'):
    # TimescaleDB's policies keep them complete up to the same lag before now (a late row younger
    # than that is not flagged: ingest/rollups.py), so the last few minutes are read raw too.
    row = conn.execute(
        """SELECT CASE WHEN exact_before = 'infinity' THEN least(%s, now() - make_interval(secs => %s))
                       WHEN isfinite(exact_before) THEN exact_before END
           FROM telemetry_rollup_state WHERE rollup = %s""",
        (end, ROLLUP_LAG_S, rollup[0].removeprefix("telemetry_")),
    ).fetchone()
    if row is None or row[0] is None:
        return None, []
    dirty = [
        h
        for (h,) in conn.execute(
            "SELECT hour FROM telemetry_rollup_dirty WHERE hour >= %s AND hour < %s ORDER BY hour",
            (start - _HOUR, end),
        )
    ]
    return row[0], dirty


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
    return SeriesGaps(series_id=series_id, from_=start, to=end, **find_gaps(times, start, end, now, factor, cadence_s))


def find_gaps(
    times: list[datetime], start: datetime, end: datetime, now: datetime, factor: float, cadence_s: float | None
) -> dict[str, Any]:
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
