"""Scheduled storage upkeep for the plain-PostgreSQL path: partitions ahead, retention behind.

Both call the SQL functions of migration 0002, which are no-ops/``drop_chunks`` on TimescaleDB, so
the jobs are safe on either storage. They run under the scheduler's leader lock
(:mod:`fieldwatch.scheduler`), so one process does it; both are idempotent anyway.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg

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
    with psycopg.connect(db_url, autocommit=True) as conn:
        return [
            conn.execute("SELECT fw_ensure_telemetry_partition(%s)", (d,)).fetchone()[0]  # type: ignore[index]
            for d in partition_days(today, ahead)
        ]


def drop_expired(db_url: str, retention_days: int | None = None, *, today: date | None = None) -> int:
    """Drop telemetry older than ``retention_days`` (default: settings) by whole partitions/chunks."""
    if retention_days is None:
        from fieldwatch.settings import load_settings

        retention_days = load_settings(database_url=db_url).retention_days
    today = today or datetime.now(UTC).date()
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT fw_drop_telemetry_before(%s)", (retention_cutoff(today, retention_days),)).fetchone()
    return int(row[0]) if row else 0


def upkeep_jobs() -> list:
    """The scheduler entries (:func:`fieldwatch.scheduler.default_jobs` adds them)."""
    from fieldwatch.scheduler import Job

    return [
        Job("ingest.partitions_ahead", ensure_partitions_ahead, seconds=3600, run_at_start=True),
        Job("ingest.retention", drop_expired, cron={"hour": 3, "minute": 17}),
    ]
