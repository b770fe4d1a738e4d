"""Is the storage's background work healthy? Judged from TimescaleDB's job rows (pure).

With TimescaleDB, rollup refreshes, compression and retention are background jobs of the
extension. When one fails, nothing in fieldwatch fails with it: the rollups silently go stale
(readers fall back to raw rows, so answers stay right but slow down), chunks stay uncompressed and
disks fill. :func:`judge_jobs` turns the rows of ``timescaledb_information.jobs``/``job_stats`` (read by
:func:`ingest.health.read_storage_health`) into ``ok`` or ``degraded`` with one sentence per problem:

* a job whose last run failed (with how many times in a row and the error, where known);
* a paused job (``scheduled = false``);
* a job overdue by more than two of its intervals (and at least :data:`OVERDUE_GRACE`): TimescaleDB's
  background workers are not running it (``timescaledb.max_background_workers``, a database
  left in ``timescaledb.restoring`` mode, a crashed scheduler).

Degraded is not unready: the API and ingest keep serving; the health endpoints say what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

OVERDUE_GRACE = timedelta(minutes=5)

#: What TimescaleDB's built-in job procedures do, for the sentences.
_WHAT = {
    "policy_refresh_continuous_aggregate": "refresh",
    "policy_compression": "compression",
    "policy_retention": "retention",
    "policy_reorder": "reorder",
    "policy_job_stat_history_retention": "job history retention",
}


@dataclass(frozen=True, slots=True)
class JobState:
    """One background job and its statistics (None where the job never ran)."""

    job_id: int
    proc: str  # the procedure it runs, e.g. policy_refresh_continuous_aggregate
    target: str  # the hypertable or continuous aggregate it works on ('' for none)
    scheduled: bool
    schedule_interval: timedelta | None
    last_run_status: str | None  # 'Success' / 'Failed'
    last_run_started_at: datetime | None
    next_start: datetime | None
    total_failures: int = 0
    consecutive_failures: int | None = None  # not in the public views of every version
    last_error: str | None = None

    @property
    def name(self) -> str:
        what = _WHAT.get(self.proc, self.proc)
        return f"job {self.job_id} ({what} {self.target})" if self.target else f"job {self.job_id} ({what})"


@dataclass(frozen=True, slots=True)
class StorageHealth:
    status: Literal["ok", "degraded"]
    problems: list[str] = field(default_factory=list)
    jobs: list[JobState] = field(default_factory=list)

    def summary(self) -> str:
        """``ok``, or ``degraded:`` and the problems, for a one-line health field."""
        return "ok" if self.status == "ok" else "degraded: " + "; ".join(self.problems)


def judge_jobs(jobs: Sequence[JobState], now: datetime) -> StorageHealth:
    """``ok`` when every job is scheduled, its last run (if any) succeeded and none is overdue; else degraded."""
    problems: list[str] = []
    for j in jobs:
        if not j.scheduled:
            problems.append(f"{j.name} is paused (scheduled = false): alter_job({j.job_id}, scheduled => true)")
            continue
        if j.last_run_status == "Failed":
            when = f" at {j.last_run_started_at:%Y-%m-%d %H:%M:%S%z}" if j.last_run_started_at else ""
            times = (
                f", {j.consecutive_failures} times in a row"
                if j.consecutive_failures and j.consecutive_failures > 1
                else ""
            )
            error = f": {j.last_error}" if j.last_error else ""
            problems.append(f"{j.name} failed its last run{when}{times}{error}")
        elif j.next_start is not None and j.schedule_interval is not None:
            late = now - j.next_start
            if late > max(2 * j.schedule_interval, OVERDUE_GRACE):
                problems.append(
                    f"{j.name} is overdue since {j.next_start:%Y-%m-%d %H:%M:%S%z}: are TimescaleDB's background "
                    "workers running (timescaledb.max_background_workers)?"
                )
    return StorageHealth("degraded" if problems else "ok", problems, list(jobs))
