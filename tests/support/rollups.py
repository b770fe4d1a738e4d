"""Writes outside the live window, and the check that buckets still equal an aggregate over raw rows.

Used on both storages (tests/test_ingest_rollups.py on plain PostgreSQL, tests/test_timescale.py on
TimescaleDB): history imported from long ago, a historical batch written again (as a dead-letter
replay or the held data of an accepted device are), and late points into an hour the rollups already
hold. Every helper opens and closes its own connection, so it also runs on the one-connection PGlite.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.history import import_history
from ingest.timeseries import buckets
from ingest.writer import BatchWrite, TelemetryWriter

H = timedelta(hours=1)
M = timedelta(minutes=1)
WIDTHS = (M, 5 * M, H, 2 * H, timedelta(days=1))


@dataclass(frozen=True)
class Written:
    """Where the out-of-window writes went: ``(start, end)`` ranges to compare, and how many rows each holds."""

    ranges: list[tuple[datetime, datetime]]
    rows: int


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def write_outside_live_window(db_url: str, device: str, device_id: int, gateway_id: int, now: datetime) -> Written:
    """History 10 days old (CSV import), a replayed historical batch 5 days old, late points 2 hours old."""
    old = _hour(now - timedelta(days=10))
    csv = ["time,flow\n"] + [f"{(old + i * 30 * timedelta(seconds=1)).isoformat()},{i % 17}.5\n" for i in range(240)]
    report = import_history(db_url, csv, device)
    assert (report.inserted, report.bad) == (240, [])

    replay_at = _hour(now - timedelta(days=5)) + 7 * M
    replay_ms = int(replay_at.timestamp() * 1000)
    replayed = [(device_id, device, "flow", replay_ms + k * 20_000, float(-k), 0) for k in range(90)]
    late_at = _hour(now - 2 * H) + 13 * M
    late = [
        (device_id, device, "flow", int((late_at + k * timedelta(seconds=11)).timestamp() * 1000), 1000.0 + k, 0)
        for k in range(40)
    ]
    writer = TelemetryWriter(db_url)
    try:
        writer.write([BatchWrite("", "", gateway_id, None, True, replayed)])
        writer.write([BatchWrite("", "", gateway_id, None, False, late)])
    finally:
        writer.close()
    return Written(
        ranges=[(old - H, old + 4 * H), (replay_at - H, replay_at + 2 * H), (late_at - 3 * H, now + H)],
        rows=240 + 90 + 40,
    )


def _raw(conn: psycopg.Connection, sid: int, start: datetime, end: datetime, width: timedelta) -> list[tuple]:
    return conn.execute(
        """SELECT date_bin(%(w)s, time, timestamptz 'epoch') AS b, count(*), min(value), max(value), avg(value),
                  (array_agg(value ORDER BY time DESC))[1]
           FROM telemetry WHERE series_id = %(s)s AND time >= %(a)s AND time < %(e)s GROUP BY b ORDER BY b""",
        {"w": width, "s": sid, "a": start, "e": end},
    ).fetchall()


def assert_buckets_equal_raw(db_url: str, sid: int, written: Written) -> None:
    """For every range and width, the buckets query gives what aggregating raw telemetry gives."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for start, end in written.ranges:
            for width in WIDTHS:
                want = _raw(conn, sid, start, end, width)
                got = buckets(conn, sid, start, end, width).buckets
                assert [(b.time, b.count, b.min, b.max, b.last) for b in got] == [
                    (w[0], w[1], w[2], w[3], w[5]) for w in want
                ], f"buckets of {width} in [{start}, {end})"
                assert [b.avg for b in got] == pytest.approx([w[4] for w in want], rel=1e-12)


def rollups_hold_raw(db_url: str, sid: int, written: Written) -> dict[str, tuple[int, int]]:
    """Per rollup: (rows it counts, raw rows) in the written ranges' whole hours; equal once refreshed."""
    out = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for rollup in ("telemetry_1m", "telemetry_1h"):
            got = want = 0
            for start, end in written.ranges:
                lo, hi = _hour(start) + H, _hour(end)
                got += conn.execute(
                    f"SELECT coalesce(sum(n), 0)::int FROM {rollup}"
                    " WHERE series_id = %s AND bucket >= %s AND bucket < %s",
                    (sid, lo, hi),
                ).fetchone()[0]  # type: ignore[index]
                want += conn.execute(
                    "SELECT count(*)::int FROM telemetry WHERE series_id = %s AND time >= %s AND time < %s",
                    (sid, lo, hi),
                ).fetchone()[0]  # type: ignore[index]
            out[rollup] = (got, want)
    return out


def run_refresh_policies(db_url: str) -> None:
    """Run TimescaleDB's continuous-aggregate refresh policies once, as its background workers do on schedule
    (a no-op with rollup tables): the rollups then hold everything up to the policies' end offsets."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        ).fetchall()
        for (job,) in jobs:
            conn.execute("CALL run_job(%s)", (job,))


def flagged_hours(db_url: str) -> int:
    """Hours waiting for the rollup job (``telemetry_rollup_dirty``)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*)::int FROM telemetry_rollup_dirty").fetchone()[0]  # type: ignore[index]


def now() -> datetime:
    return datetime.now(UTC)
