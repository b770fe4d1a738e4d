"""The rules package's scheduled jobs (see :func:`fieldwatch.jobs.default_jobs`)."""

from __future__ import annotations

from fwcore.jobs import Job
from rules.anomaly_rules import retrain_job
from rules.lifecycle import release_job
from rules.nodata import no_data_job


def rule_jobs() -> list[Job]:
    """Periodic rule work; each job is ``func(db_url)`` and testable without a scheduler."""
    return [
        Job("rules.release_suppressed", release_job, seconds=30),
        Job("rules.no_data", no_data_job, seconds=30),
        # Trains untrained anomaly rules and re-fits "last N days" windows every rule's retrain_every_h.
        Job("rules.anomaly_retrain", retrain_job, seconds=900),
    ]
