"""The scheduled jobs of a deployment: each domain package's own, gathered by the application.

The foundation's :class:`fwcore.jobs.LeaderScheduler` runs whatever list it is given; this is the
one place that knows every domain, so the domains never import each other or the application.
"""

from __future__ import annotations

from fwcore.jobs import Job


def default_jobs() -> list[Job]:
    """The jobs every deployment runs: rules, ingest upkeep, then ticketing."""
    from ingest.upkeep import upkeep_jobs  # partitions ahead, retention, rollup refresh
    from rules.jobs import rule_jobs  # suppression release, no-data/offline checks, anomaly retraining
    from ticketing.reoptimize import ticketing_jobs  # SLA checks, webhooks, maintenance, re-optimisation

    return [*rule_jobs(), *upkeep_jobs(), *ticketing_jobs()]
