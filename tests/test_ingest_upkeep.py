"""Scheduled storage upkeep: daily partitions created ahead, expired ones dropped for retention."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest

from fieldwatch.jobs import default_jobs
from ingest.retention import RetentionPlan, retention_plan
from ingest.upkeep import drop_expired, ensure_partitions_ahead, partition_days, retention_cutoff
from tests.support.api import write_points

TODAY = date(2026, 3, 10)


def _partitions(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'telemetry'::regclass ORDER BY 1"
            )
        ]


def test_pure_day_arithmetic() -> None:
    """Today plus N days ahead are ensured; the cutoff is today minus the retention."""
    assert partition_days(TODAY, 2) == [date(2026, 3, 10), date(2026, 3, 11), date(2026, 3, 12)]
    assert retention_cutoff(TODAY, 30) == date(2026, 2, 8)


@pytest.mark.parametrize(
    ("storage", "license", "has_policy", "policy", "noted"),
    [
        ("plain", None, False, "none", False),
        ("timescale", "timescale", False, "sync", False),  # e.g. just switched from Apache: add the policy
        ("timescale", "timescale", True, "sync", False),
        ("timescale", "apache", False, "skip", False),
        ("timescale", "apache", True, "skip", True),  # switched from community: the old policy no longer runs
        ("timescale", None, True, "skip", True),
    ],
)
def test_retention_follows_the_license_in_force_and_always_drops(
    storage: str, license: str | None, has_policy: bool, policy: str, noted: bool
) -> None:
    """The policy is synced only where the current license has policies; the drop runs whatever the license."""
    plan = retention_plan(storage, license, has_policy)
    assert (plan.policy, plan.drop, bool(plan.note)) == (policy, True, noted)
    assert isinstance(plan, RetentionPlan)


@pytest.mark.plain_storage
def test_partitions_ahead_then_retention_drops_only_expired_days(db_url: str) -> None:
    """Partitions for the next days exist after the job (twice is harmless); retention drops whole days
    before the cutoff and keeps the rest with their rows."""
    ensure_partitions_ahead(db_url, 3, today=TODAY)
    assert ensure_partitions_ahead(db_url, 3, today=TODAY)[0] == "telemetry_p20260310"
    with psycopg.connect(db_url, autocommit=True) as conn:
        write_points(conn, 1, [(datetime(2026, 1, 5, tzinfo=UTC), 1.0, 0), (datetime(2026, 3, 9, tzinfo=UTC), 2.0, 0)])
    assert _partitions(db_url) == [
        "telemetry_p20260105",
        "telemetry_p20260309",
        "telemetry_p20260310",
        "telemetry_p20260311",
        "telemetry_p20260312",
        "telemetry_p20260313",
    ]
    assert drop_expired(db_url, 30, today=TODAY) == 1
    assert _partitions(db_url)[0] == "telemetry_p20260309"
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (1,)


def test_jobs_are_scheduled() -> None:
    """The scheduler runs both upkeep jobs."""
    ids = {j.id for j in default_jobs()}
    assert {"ingest.partitions_ahead", "ingest.retention", "ingest.rollups"} <= ids
