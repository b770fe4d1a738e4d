"""How the daily retention job drops old telemetry, given the storage and the license in force now (pure).

Retention has two mechanisms: TimescaleDB's retention *policy* (``add_retention_policy``, community
license only: a background job drops chunks even when our scheduler is down) and our own daily
drop (``fw_drop_telemetry_before``: daily partitions on plain PostgreSQL, ``drop_chunks`` on
TimescaleDB, which every license has). The drop always runs; the policy is kept in step only where
the license in force *now* has policies. The license can change under a running database (an
operator edits ``timescaledb.license``), so it is read at every run, never taken from what the
migrations saw (``fw_meta.rollups``):

* Apache → community: the policy is added at the next run; the drop ran before and still runs.
* community → Apache: the policy functions refuse to run (and a policy left from before no longer
  runs by itself), so they are not called; the drop does the work, and the leftover policy is
  named in the job's log at each run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PolicyAction = Literal["sync", "skip", "none"]


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What one retention run does: ``policy`` (sync: remove + add with the current days; skip: leave
    as is, it cannot be touched under this license; none: plain storage) and always the drop."""

    policy: PolicyAction
    drop: bool = True
    note: str = ""  # said in the job's log when not empty


def retention_plan(storage: str, license: str | None, has_policy: bool) -> RetentionPlan:
    """The plan for ``storage`` (``plain``/``timescale``) under ``license`` (``timescale``, ``apache`` or None)."""
    if storage != "timescale":
        return RetentionPlan("none")
    if license == "timescale":
        return RetentionPlan("sync")
    if has_policy:
        return RetentionPlan(
            "skip",
            note=(
                f"TimescaleDB license is {license or 'unknown'}: the retention policy left from the community "
                "license does not run; old chunks are dropped by this job instead"
            ),
        )
    return RetentionPlan("skip")
