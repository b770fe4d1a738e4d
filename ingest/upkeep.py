"""Scheduled storage upkeep: partitions ahead, retention behind, rollups kept current, held points expired.

The partition and retention jobs call the SQL functions of migration 0002, which are
no-ops/``drop_chunks`` on TimescaleDB; the rollup job is :func:`ingest.rollups.refresh_written`
(``fw_refresh_rollups`` with rollup tables; the flagged hours of continuous aggregates, whose
policies refresh the recent past). So every job is safe on either storage. They run
under the scheduler's leader lock (:mod:`fwcore.jobs`), so one process does each; all are
idempotent anyway.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import psycopg

from fwcore.jobs import Job
from ingest.discovery import expire_held
from ingest.retention import retention_plan
from ingest.rollups import ROLLUP_LAG_S, refresh_written
from ingest.schema import storage_of, timescale_license

log = logging.getLogger(__name__)

#: Days of partitions kept created ahead of today, so a burst of data never waits on DDL.
DAYS_AHEAD = 7


def partition_days(today: date, ahead: int) -> list[date]:
    """Today and the ``ahead`` days after it (pure)."""
    return [today + timedelta(days=i) for i in range(ahead + 1)]


def retention_cutoff(today: date, retention_days: int) -> date:
    """The first day kept: partitions of days before it are dropped (pure)."""
    return today - timedelta(days=retention_days)


def ensure_partitions_ahead(db_url: str, ahead: int = DAYS_AHEAD, *, today: date | None = None) -> list[str]:
    """Create the daily partitions for today and the next ``ahead`` days; returns their names."""
    today = today or datetime.now(UTC).date()
    names: list[str] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        for d in partition_days(today, ahead):
            row = conn.execute("SELECT fw_ensure_telemetry_partition(%s)", (d,)).fetchone()
            assert row is not None  # a function call returns one row
            names.append(row[0])
    return names


def drop_expired(db_url: str, retention_days: int | None = None, *, today: date | None = None) -> int:
    """Drop telemetry older than ``retention_days`` (default: settings) by whole partitions/chunks.

    The TimescaleDB retention policy is kept in step first where the license in force has policies
    (:func:`ingest.retention.retention_plan`); whatever happens there, the drop runs. Returns the
    partitions/chunks dropped.
    """
    if retention_days is None:
        from fwcore.settings import load_settings

        retention_days = load_settings(database_url=db_url).retention_days
    today = today or datetime.now(UTC).date()
    with psycopg.connect(db_url, autocommit=True) as conn:
        plan = retention_plan(storage_of(conn), timescale_license(conn), _has_retention_policy(conn))
        if plan.note:
            log.warning("retention: %s", plan.note)
        if plan.policy == "sync":
            try:
                _sync_retention_policy(conn, retention_days)
            except psycopg.Error as exc:
                log.error("retention: could not update the TimescaleDB retention policy (%s); dropping by hand", exc)
        row = conn.execute("SELECT fw_drop_telemetry_before(%s)", (retention_cutoff(today, retention_days),)).fetchone()
    return int(row[0]) if row else 0


def _has_retention_policy(conn: psycopg.Connection) -> bool:
    if conn.execute("SELECT to_regclass('timescaledb_information.jobs')").fetchone() == (None,):
        return False
    row = conn.execute(
        """SELECT 1 FROM timescaledb_information.jobs
           WHERE proc_name = 'policy_retention' AND hypertable_name = 'telemetry'"""
    ).fetchone()
    return row is not None


def _sync_retention_policy(conn: psycopg.Connection, retention_days: int) -> None:
    """Replace ``telemetry``'s retention policy with one for ``retention_days`` (community license).

    The policy drops chunks even when no scheduler runs; this job's drop stays as the fallback
    for the Apache edition (no policies) and plain PostgreSQL (partitions).
    """
    with conn.transaction():
        conn.execute("SELECT remove_retention_policy('telemetry', if_exists => true)")
        conn.execute(
            "SELECT add_retention_policy('telemetry', drop_after => make_interval(days => %s))", (retention_days,)
        )


def refresh_rollups(db_url: str, lag_s: int = ROLLUP_LAG_S) -> int:
    """Bring ``telemetry_1m``/``telemetry_1h`` up to date, flagged hours included (``ingest.rollups``).

    Tables: re-aggregates from ``lag_s`` before the previous run onwards plus every hour the writer
    flagged (migration 0004); returns the 1-minute rows written. Continuous aggregates: refreshes
    the flagged hours (their policies keep the recent past); returns the hours refreshed.
    """
    return refresh_written(db_url, lag_s)


def upkeep_jobs() -> list[Job]:
    """The scheduler entries (:func:`fieldwatch.jobs.default_jobs` adds them)."""
    return [
        Job("ingest.partitions_ahead", ensure_partitions_ahead, seconds=3600, run_at_start=True),
        Job("ingest.retention", drop_expired, cron={"hour": 3, "minute": 17}),
        Job("ingest.rollups", refresh_rollups, seconds=60, run_at_start=True),
        # Points held too long for devices nobody accepted become dead letters (hold_expired).
        Job("ingest.held_expiry", expire_held, seconds=600, run_at_start=True),
    ]
