"""The TimescaleDB storage path. Runs when FIELDWATCH_TIMESCALE_URL names a TimescaleDB server, or is
``pglite`` for the bundled PGlite + TimescaleDB build (tests/support/timescale.py says what that can't do)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from ingest.schema import available_migrations, migrate, storage_of, timescale_license
from tests.support.timescale import SKIP_REASON, TIMESCALE_URL, timescale_database

pytestmark = [pytest.mark.timescale, pytest.mark.skipif(TIMESCALE_URL is None, reason=SKIP_REASON)]


@pytest.fixture
def ts_db() -> Iterator[str]:
    """An empty database on TimescaleDB for this test."""
    with timescale_database() as url:
        yield url


def test_timescale_is_detected_and_telemetry_is_a_hypertable(ts_db: str) -> None:
    """On a TimescaleDB server, migrate picks the timescale variants and telemetry becomes a hypertable."""
    applied = migrate(ts_db)
    assert applied == [m.name for m in available_migrations("timescale")]
    assert any(name.endswith(".timescale.sql") for name in applied)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        assert storage_of(conn) == "timescale"
        assert timescale_license(conn) in ("timescale", "apache")
        row = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_name = 'telemetry'"
        ).fetchone()
        assert row == ("telemetry",)
        interval = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'telemetry'"
        ).fetchone()[0]
        assert interval.days == 1


def test_timescale_telemetry_dedups_and_helpers_work(ts_db: str) -> None:
    """The same insert-on-conflict path and partition helpers work on the hypertable."""
    migrate(ts_db)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        assert conn.execute("SELECT fw_ensure_telemetry_partition('2026-01-02')").fetchone() == ("telemetry",)
        for _ in range(2):
            conn.execute(
                "INSERT INTO telemetry VALUES (1, '2026-01-02 12:00+00', 1.5, 0), (1, '2026-01-03 12:00+00', 2, 0)"
                " ON CONFLICT (series_id, time) DO NOTHING"
            )
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (2,)
        dropped = conn.execute("SELECT fw_drop_telemetry_before('2026-01-03')").fetchone()[0]
        assert dropped >= 1
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (1,)


def test_writer_on_the_hypertable_stores_once_and_keeps_conflicting_values_aside(ts_db: str) -> None:
    """The ingest writer on a hypertable: a redelivered batch is a no-op and a different value for a stored time is
    kept aside as a conflicting_value dead letter, as on plain PostgreSQL."""
    from ingest.writer import BatchWrite, TelemetryWriter
    from tests.support.api import seed

    migrate(ts_db)
    fleet = seed(ts_db)
    dev, gw = fleet.devices["pump-1"], fleet.gateways["gw-a"]
    t = 1_767_225_600_000  # 2026-01-01
    first = [(dev, "pump-1", "inflow", t + i * 1000, float(i), 0) for i in range(5)]
    writer = TelemetryWriter(ts_db)
    try:
        a = writer.write([BatchWrite("plant-a", "gw-a", gw, 7, False, first)])
        b = writer.write([BatchWrite("plant-a", "gw-a", gw, 7, False, first)])
        c = writer.write([BatchWrite("plant-a", "gw-a", gw, 8, False, [(*first[0][:4], 99.0, 0)])])
    finally:
        writer.close()
    assert (a.inserted, b.inserted, b.duplicates, c.conflicts) == (5, 0, 5, 1)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        stored = conn.execute(
            "SELECT count(*), sum(t.value) FROM telemetry t JOIN series s ON s.id = t.series_id WHERE s.tag = 'inflow'"
        )
        assert stored.fetchone() == (5, 10.0)
        assert conn.execute("SELECT reason FROM dead_letters").fetchall() == [("conflicting_value",)]


def test_timescale_rollups_follow_the_license_and_match_raw(ts_db: str) -> None:
    """Community license: continuous aggregates + compression + policies; Apache: rollup tables and the job.
    Either way the buckets query equals an aggregate over raw telemetry."""
    from datetime import UTC, datetime, timedelta

    from ingest.timeseries import buckets
    from ingest.upkeep import drop_expired, refresh_rollups
    from tests.support.api import seed

    # One connection at a time (the bundled PGlite serves one): each block closes its own.
    migrate(ts_db)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        mode = conn.execute("SELECT value FROM fw_meta WHERE key = 'rollups'").fetchone()[0]
        licensed = timescale_license(conn) == "timescale"
        if licensed:
            assert mode == "continuous"
            caggs = {r[0] for r in conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")}
            assert caggs == {"telemetry_1m", "telemetry_1h"}
            procs = {r[0] for r in conn.execute("SELECT proc_name FROM timescaledb_information.jobs")}
            assert {"policy_refresh_continuous_aggregate", "policy_compression"} <= procs
        else:
            assert mode == "tables"
    if licensed:
        drop_expired(ts_db, 30)
        with psycopg.connect(ts_db, autocommit=True) as conn:
            procs = {r[0] for r in conn.execute("SELECT proc_name FROM timescaledb_information.jobs")}
            assert "policy_retention" in procs
    sid = seed(ts_db).series["pump-1/vibration"]
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    with psycopg.connect(ts_db, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO telemetry VALUES (%s, %s, %s, 0)",
            [(sid, t0 + timedelta(seconds=13 * i), float(i % 50)) for i in range(800)],
        )
    refresh_rollups(ts_db)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        want = conn.execute(
            """SELECT date_bin('1 hour', time, timestamptz 'epoch'), count(*), min(value), max(value)
               FROM telemetry WHERE series_id = %s GROUP BY 1 ORDER BY 1""",
            (sid,),
        ).fetchall()
        got = buckets(conn, sid, t0, t0 + timedelta(hours=4), timedelta(hours=1)).buckets
        assert [(b.time, b.count, b.min, b.max) for b in got] == want


def test_retention_adds_the_policy_after_a_switch_from_apache_and_drops_old_chunks(ts_db: str) -> None:
    """A database migrated under the Apache license (rollups recorded as tables) gets the retention policy once
    the community license is in force, and the job's own drop_chunks still removes expired chunks."""
    from datetime import date

    from ingest.upkeep import drop_expired

    migrate(ts_db)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        if timescale_license(conn) != "timescale":
            pytest.skip("needs the community license in force")
        # What the migrations record under the Apache license (0004 then made rollup tables).
        conn.execute("UPDATE fw_meta SET value = 'tables' WHERE key = 'rollups'")
        conn.execute(
            "INSERT INTO telemetry VALUES (1, '2026-01-02 12:00+00', 1.5, 0), (1, '2026-03-01 12:00+00', 2, 0)"
        )
    assert drop_expired(ts_db, 30, today=date(2026, 3, 10)) >= 1
    with psycopg.connect(ts_db, autocommit=True) as conn:
        days = conn.execute(
            """SELECT config->>'drop_after' FROM timescaledb_information.jobs
               WHERE proc_name = 'policy_retention' AND hypertable_name = 'telemetry'"""
        ).fetchall()
        assert days == [("30 days",)]
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (1,)
    drop_expired(ts_db, 45, today=date(2026, 3, 10))  # a changed setting replaces the policy
    with psycopg.connect(ts_db, autocommit=True) as conn:
        days = conn.execute(
            "SELECT config->>'drop_after' FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        ).fetchall()
        assert days == [("45 days",)]


def test_imported_replayed_and_late_data_equal_raw_after_the_policies_ran(ts_db: str) -> None:
    """With the refresh policies run (the continuous aggregates' watermark at now), history from 10 days ago, a replayed
    batch from 5 days ago and late points give the same buckets as raw at once; the rollup job then materializes
    exactly the flagged hours."""
    from ingest.upkeep import refresh_rollups
    from tests.support.api import seed
    from tests.support.rollups import (
        assert_buckets_equal_raw,
        flagged_hours,
        now,
        rollups_hold_raw,
        run_refresh_policies,
        write_outside_live_window,
    )

    migrate(ts_db)
    fleet = seed(ts_db)
    sid = fleet.series["pump-1/flow"]
    run_refresh_policies(ts_db)
    written = write_outside_live_window(ts_db, "pump-1", fleet.devices["pump-1"], fleet.gateways["gw-a"], now())
    assert_buckets_equal_raw(ts_db, sid, written)
    refresh_rollups(ts_db)
    assert flagged_hours(ts_db) == 0
    assert {r: got == raw for r, (got, raw) in rollups_hold_raw(ts_db, sid, written).items()} == {
        "telemetry_1m": True,
        "telemetry_1h": True,
    }
    assert_buckets_equal_raw(ts_db, sid, written)


def test_health_reads_the_job_statistics_and_shows_a_failing_refresh(ts_db: str) -> None:
    """The storage health lists TimescaleDB's policy jobs by what they work on; once the 1 min refresh has failed
    three times in a row (as its statistics record), the storage is degraded and says which job."""
    from ingest.health import read_storage_health

    migrate(ts_db)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        health = read_storage_health(conn)
        assert health.status == "ok", health.problems
        jobs = {(j.proc, j.target) for j in health.jobs}
        assert {
            ("policy_refresh_continuous_aggregate", "telemetry_1m"),
            ("policy_refresh_continuous_aggregate", "telemetry_1h"),
            ("policy_compression", "telemetry"),
        } <= jobs
        [refresh_1m] = [j.job_id for j in health.jobs if j.target == "telemetry_1m"]
        # What the scheduler records after three failed runs (the bundled PGlite has no background workers
        # to fail for real, so the statistics row is written the way TimescaleDB writes it).
        conn.execute("DELETE FROM _timescaledb_internal.bgw_job_stat WHERE job_id = %s", (refresh_1m,))
        conn.execute(
            """INSERT INTO _timescaledb_internal.bgw_job_stat
                   (job_id, last_start, last_finish, next_start, last_successful_finish, last_run_success,
                    total_runs, total_duration, total_duration_failures, total_successes, total_failures,
                    total_crashes, consecutive_failures, consecutive_crashes, flags)
               VALUES (%s, now() - interval '1 minute', now() - interval '50 seconds', now() + interval '1 minute',
                       '-infinity', false, 3, interval '3 seconds', interval '3 seconds', 0, 3, 0, 3, 0, 0)""",
            (refresh_1m,),
        )
        health = read_storage_health(conn)
    assert health.status == "degraded"
    assert [p.split(" at ")[0] for p in health.problems] == [
        f"job {refresh_1m} (refresh telemetry_1m) failed its last run"
    ]
    assert health.problems[0].endswith("3 times in a row")


@pytest.mark.parametrize(
    "commit",
    ["629a48a", "049a885", "c8ef647"],
    ids=["first-landed-0001-0002", "0004v1-049a885", "0004v2-c8ef647"],
)
def test_timescale_past_states_with_data_upgrade_to_head(ts_db: str, commit: str) -> None:
    """On TimescaleDB, the first landed state and states with 0004 v1 / v2, with data, upgrade to a fresh head."""
    from tests.fixtures.migrations.history import (
        apply_as_released,
        assert_backfills,
        assert_rows_intact,
        catalog,
        catalog_diff,
        files_at,
        rows,
        seed,
        tables,
        timescale_catalog,
    )

    with timescale_database() as head_url:
        migrate(head_url)
        with psycopg.connect(head_url, autocommit=True) as conn:
            head = catalog(conn) | timescale_catalog(conn)

    with psycopg.connect(ts_db, autocommit=True) as conn:
        apply_as_released(conn, files_at(commit), storage="timescale")
        before_tables = tables(conn)
        seed(conn)
        before = rows(conn)
    migrate(ts_db)
    assert migrate(ts_db) == []
    with psycopg.connect(ts_db, autocommit=True) as conn:
        assert storage_of(conn) == "timescale"
        assert_rows_intact(before, rows(conn))
        assert catalog_diff(catalog(conn) | timescale_catalog(conn), head) == {}
        assert_backfills(conn, before_tables)
        # The rollups cover the telemetry written before they existed: tables by their first refresh,
        # continuous aggregates by the one-off full refresh docs/upgrading.md prescribes.
        mode = conn.execute("SELECT value FROM fw_meta WHERE key = 'rollups'").fetchone()[0]
        if mode == "continuous":
            conn.execute("CALL refresh_continuous_aggregate('telemetry_1m', NULL, NULL)")
            conn.execute("CALL refresh_continuous_aggregate('telemetry_1h', NULL, NULL)")
        else:
            conn.execute("SELECT fw_refresh_rollups()")
        total = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]
        assert conn.execute("SELECT sum(n) FROM telemetry_1h").fetchone()[0] == total
        assert conn.execute("SELECT sum(n) FROM telemetry_1m").fetchone()[0] == total
