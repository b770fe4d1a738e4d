"""Rollups and the buckets query reading them: the plain path (telemetry_1m/_1h tables kept by the scheduled job)
in detail, and buckets equal to raw after writes outside the live window on whichever storage the server has."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.rollups import hour_ranges
from ingest.timeseries import buckets, plan_ranges, rollup_for
from ingest.upkeep import refresh_rollups
from ingest.writer import BatchWrite, TelemetryWriter, late_hours
from tests.support.api import seed, write_points
from tests.support.rollups import (
    assert_buckets_equal_raw,
    flagged_hours,
    now,
    rollups_hold_raw,
    write_outside_live_window,
)

H = timedelta(hours=1)
M = timedelta(minutes=1)
DAY = (datetime.now(UTC) - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)


def _raw_buckets(conn: psycopg.Connection, sid: int, start: datetime, end: datetime, width: timedelta) -> list:
    """The reference: the same aggregates straight over raw telemetry."""
    return conn.execute(
        """SELECT date_bin(%(w)s, time, timestamptz 'epoch') AS b, count(*), min(value), max(value), avg(value),
                  (array_agg(value ORDER BY time DESC))[1]
           FROM telemetry WHERE series_id = %(s)s AND time >= %(a)s AND time < %(e)s GROUP BY b ORDER BY b""",
        {"w": width, "s": sid, "a": start, "e": end},
    ).fetchall()


def _assert_same(conn: psycopg.Connection, sid: int, start: datetime, end: datetime, width: timedelta) -> None:
    got = buckets(conn, sid, start, end, width).buckets
    want = _raw_buckets(conn, sid, start, end, width)
    assert [(b.time, b.count, b.min, b.max, b.last) for b in got] == [(w[0], w[1], w[2], w[3], w[5]) for w in want]
    assert [b.avg for b in got] == pytest.approx([w[4] for w in want], rel=1e-12)


def _write(db_url: str, device_id: int, gateway_id: int, tag: str, points: list[tuple[datetime, float]]) -> None:
    """Through the ingest writer (as live ingest and history import do), so late rows flag their hour."""
    rows = [(device_id, "pump-1", tag, int(t.timestamp() * 1000), v, 0) for t, v in points]
    writer = TelemetryWriter(db_url)
    try:
        writer.write([BatchWrite("plant-a", "gw-a", gateway_id, None, True, rows)])
    finally:
        writer.close()


def test_rollup_choice_and_range_plan_are_exact() -> None:
    """Widths that a rollup tiles use it; the plan reads rollups only for whole, complete, clean buckets."""
    assert rollup_for(timedelta(hours=2))[0] == "telemetry_1h"
    assert rollup_for(timedelta(minutes=5))[0] == "telemetry_1m"
    assert rollup_for(timedelta(seconds=90)) is None and rollup_for(timedelta(seconds=30)) is None
    t = datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC)
    end = datetime(2026, 3, 2, 15, 20, tzinfo=UTC)
    exact = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    lo, hi, raw = plan_ranges(t, end, ("telemetry_1h", H), exact, [datetime(2026, 3, 2, 12, tzinfo=UTC)])
    assert (lo, hi) == (datetime(2026, 3, 2, 11, tzinfo=UTC), datetime(2026, 3, 2, 14, tzinfo=UTC))
    assert raw == [
        (t, lo),
        (datetime(2026, 3, 2, 12, tzinfo=UTC), datetime(2026, 3, 2, 13, tzinfo=UTC)),
        (hi, end),
    ]
    assert plan_ranges(t, end, ("telemetry_1h", H), None, []) == (t, t, [(t, end)])


def test_late_hours_flags_only_rows_older_than_the_margin() -> None:
    """Only rows more than five minutes old flag their (epoch) hour."""
    now = 10 * 3_600_000 + 30 * 60_000
    rows = [(1, "d", "x", now - 60_000, 1.0, 0), (1, "d", "x", now - 3 * 3_600_000, 1.0, 0)]
    assert late_hours([BatchWrite("s", "g", 1, None, False, rows)], now) == [7]


@pytest.mark.parametrize(
    ("hours", "ranges"),
    [
        ([], []),
        ([0], [(0, 1)]),
        ([3, 1, 2], [(1, 4)]),  # unordered, consecutive: one range
        ([5, 1, 2, 2, 9, 6], [(1, 3), (5, 7), (9, 10)]),  # repeats are harmless
    ],
)
def test_flagged_hours_merge_into_ranges(hours: list[int], ranges: list[tuple[int, int]]) -> None:
    """Consecutive flagged hours become one refresh range, so a year of history is one refresh, not 8,760."""
    t = datetime(2026, 3, 2, tzinfo=UTC)
    assert hour_ranges(t + h * H for h in hours) == [(t + a * H, t + b * H) for a, b in ranges]


@pytest.mark.plain_storage
def test_rollups_equal_raw_buckets_including_after_late_data(db_url: str) -> None:
    """After the job, 1m/1h rollups give the same buckets as raw telemetry for any range; late rows are read
    raw until the next run re-aggregates their flagged hour, and then the rollup holds them too."""
    fleet = seed(db_url)
    sid, dev, gw = fleet.series["pump-1/flow"], fleet.devices["pump-1"], fleet.gateways["gw-a"]
    rnd = random.Random(4)
    _write(db_url, dev, gw, "flow", [(DAY + i * timedelta(seconds=7), rnd.uniform(0, 100)) for i in range(0, 1800)])
    refresh_rollups(db_url)
    start, end = DAY + timedelta(seconds=30), DAY + 3 * H + 17 * M
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM telemetry_rollup_dirty").fetchone() == (0,)
        total = conn.execute(
            "SELECT sum(n)::int FROM telemetry_1h WHERE series_id = %s AND bucket >= %s AND bucket < %s",
            (sid, DAY, DAY + 5 * H),
        )
        assert total.fetchone() == (1800,)
        for width in (M, 5 * M, H, 2 * H, timedelta(seconds=30)):
            _assert_same(conn, sid, start, end, width)

        # Late rows inside the rolled-up past: flagged, read raw until the next run.
        late = [(DAY + H + timedelta(seconds=7 * i + 3), 1000.0 + i) for i in range(20)]
        _write(db_url, dev, gw, "flow", late)
        assert conn.execute("SELECT hour FROM telemetry_rollup_dirty").fetchall() == [(DAY + H,)]
        stale = conn.execute("SELECT n FROM telemetry_1h WHERE series_id = %s AND bucket = %s", (sid, DAY + H))
        assert stale.fetchone() == (514,)  # not re-aggregated yet
        for width in (M, H, 2 * H):
            _assert_same(conn, sid, start, end, width)
        refresh_rollups(db_url)
        fresh = conn.execute("SELECT n, vmax FROM telemetry_1h WHERE series_id = %s AND bucket = %s", (sid, DAY + H))
        assert fresh.fetchone() == (534, 1019.0)
        for width in (M, 5 * M, H, 2 * H):
            _assert_same(conn, sid, start, end, width)

        # The rollup is what answers: a doctored rollup row shows through (and only for whole hours).
        conn.execute("UPDATE telemetry_1h SET vmax = 5000 WHERE series_id = %s AND bucket = %s", (sid, DAY + 2 * H))
        by_hour = {b.time: b.max for b in buckets(conn, sid, DAY, DAY + 4 * H, H).buckets}
        assert by_hour[DAY + 2 * H] == 5000


def test_recent_rows_are_rolled_up_by_the_trailing_window(db_url: str) -> None:
    """Rows inserted without flags (recent data, any writer) are picked up by the next run's window."""
    fleet = seed(db_url)
    sid = fleet.series["pump-1/vibration"]
    refresh_rollups(db_url)
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        write_points(conn, sid, [(now - 2 * M, 1.0, 0), (now - M, 3.0, 0)])
        refresh_rollups(db_url)
        rows = conn.execute("SELECT sum(n)::int, max(vmax) FROM telemetry_1m WHERE series_id = %s", (sid,)).fetchone()
        assert rows == (2, 3.0)
        _assert_same(conn, sid, now - H, now + M, M)


def test_imported_replayed_and_late_data_outside_the_window_equal_raw(db_url: str) -> None:
    """History from 10 days ago, a replayed batch from 5 days ago and late points into rolled-up hours: buckets equal
    raw at once, and after the next job run the rollups hold every one of those rows and no hour is left flagged."""
    fleet = seed(db_url)
    sid = fleet.series["pump-1/flow"]
    refresh_rollups(db_url)  # the job has run: the rollups are complete up to a few minutes ago
    written = write_outside_live_window(db_url, "pump-1", fleet.devices["pump-1"], fleet.gateways["gw-a"], now())
    assert_buckets_equal_raw(db_url, sid, written)
    refresh_rollups(db_url)
    assert flagged_hours(db_url) == 0
    assert {r: got == raw for r, (got, raw) in rollups_hold_raw(db_url, sid, written).items()} == {
        "telemetry_1m": True,
        "telemetry_1h": True,
    }
    assert_buckets_equal_raw(db_url, sid, written)
