"""The rules package's scheduled jobs (see :func:`fieldwatch.scheduler.default_jobs`)."""

from __future__ import annotations

from fieldwatch.scheduler import Job
from rules.lifecycle import release_job


def rule_jobs() -> list[Job]:
    """Periodic rule work; each job is ``func(db_url)`` and testable without a scheduler."""
    return [
        Job("rules.release_suppressed", release_job, seconds=30),
    ]
