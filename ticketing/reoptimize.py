"""Periodic re-optimisation of the day's plan, and the ticketing package's scheduled jobs.

Incremental insertion never moves a stop that is already planned, so the day drifts away from the
best plan as tickets arrive. :func:`reoptimize_day` re-solves the whole day with OR-Tools
(:func:`ticketing.optimizer.solve`) warm-started from the stored plan, keeping fixed:

* jobs under way (``en_route``, ``on_site``);
* jobs a dispatcher locked (``assignments.locked``);
* jobs starting within the freeze horizon (default 60 min) — a technician is not re-routed minutes
  before they leave;
* pins (``tickets.pinned_technician_id``) restrict a job to one technician, as in insertion.

The solve runs WITHOUT the plan lock (it takes seconds; insertions must stay fast). The result is
applied only if the stored plan did not change meanwhile, it breaks no hard constraint, drops no
job and costs less; every run is recorded in ``plan_runs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from fwcore.events import TicketReassignedEvent, publish
from fwcore.jobs import Job
from ticketing.geo import GreatCircleTravel, TravelModel
from ticketing.optimizer import CachedTravel, check_plan, explain_job, solve
from ticketing.planning import explanation_json, frozen_prefixes, load_snapshot, lock_plan, moved_jobs, write_route

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PlanRun:
    """What one re-optimisation did."""

    jobs: int
    moved: int
    cost_before: float
    cost_after: float
    solve_s: float
    accepted: bool
    note: str


def reoptimize_day(
    db_url: str,
    *,
    travel: TravelModel | None = None,
    now: datetime | None = None,
    freeze_minutes: float = 60.0,
    time_limit_s: float = 5.0,
) -> PlanRun:
    """Re-solve today's plan and store it if it is better (see the module docstring)."""
    now = now or datetime.now(UTC)
    travel = CachedTravel(travel or GreatCircleTravel())
    with psycopg.connect(db_url, autocommit=True) as conn:
        snap = load_snapshot(conn, now)
        if not snap.problem.jobs:
            return PlanRun(0, 0, 0.0, 0.0, 0.0, False, "nothing planned")
        before = check_plan(snap.problem, travel, snap.plan)
        result = solve(
            snap.problem,
            travel,
            time_limit_s=time_limit_s,
            initial=snap.plan,
            frozen=frozen_prefixes(snap, freeze_minutes),
        )
        after = check_plan(snap.problem, travel, result.plan)
        moved = moved_jobs(snap.plan, result.plan)
        note, accepted = _verdict(before, after)
        with conn.transaction():
            lock_plan(conn)
            if accepted and load_snapshot(conn, now).signature() != snap.signature():
                accepted, note = False, "the plan changed while solving; the next run retries"
            if accepted:
                for job_id in sorted(moved):
                    tech_id = result.plan.tech_of(job_id)
                    exp = explain_job(snap.problem, travel, result.plan, job_id)
                    conn.execute(
                        "UPDATE assignments SET active = false, ended_at = now() WHERE ticket_id = %s AND active",
                        (job_id,),
                    )
                    conn.execute(
                        """INSERT INTO assignments (ticket_id, technician_id, reason, explanation, origin)
                           VALUES (%s, %s, %s, %s, 'reoptimize')""",
                        (job_id, tech_id, "re-optimised day: " + exp.text(), Jsonb(explanation_json(exp))),
                    )
                    publish(conn, TicketReassignedEvent(ticket_id=job_id))
                for tech_id, stops in result.plan.routes.items():
                    if stops:
                        write_route(conn, snap, travel, tech_id, tuple(stops))
            conn.execute(
                """INSERT INTO plan_runs (jobs, moved, cost_before, cost_after, solve_s, accepted, note)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                (
                    len(snap.problem.jobs),
                    len(moved) if accepted else 0,
                    before.cost,
                    after.cost,
                    result.solve_s,
                    accepted,
                    note,
                ),
            )
    run = PlanRun(
        len(snap.problem.jobs), len(moved) if accepted else 0, before.cost, after.cost, result.solve_s, accepted, note
    )
    log.info("re-optimisation: %s", run)
    return run


def _verdict(before, after) -> tuple[str, bool]:
    if after.violations:
        return f"rejected: the solver's plan breaks {after.violations[0]}", False
    dropped = set(after.unassigned) - set(before.unassigned)
    if dropped:
        return f"rejected: would leave {len(dropped)} planned job(s) unassigned", False
    if before.feasible and after.cost >= before.cost - 1e-6:
        return "kept: no cheaper plan found", False
    return f"applied: cost {before.cost:.1f} → {after.cost:.1f}", True


def reoptimize_job(db_url: str) -> PlanRun:
    """Scheduler entry point, with travel from the settings."""
    from fwcore.settings import get_settings

    s = get_settings()
    return reoptimize_day(
        db_url, travel=GreatCircleTravel(speed_kmh=s.travel_speed_kmh, detour_factor=s.travel_detour_factor)
    )


def ticketing_jobs() -> list[Job]:
    """The ticketing package's periodic jobs (see :func:`fieldwatch.jobs.default_jobs`)."""
    from ticketing.maintenance import maintenance_job
    from ticketing.sla_checks import sla_job
    from ticketing.webhooks import webhook_job

    return [
        Job("ticketing.reoptimize_day", reoptimize_job, seconds=900),
        Job("ticketing.sla_check", sla_job, seconds=60),
        Job("ticketing.webhooks", webhook_job, seconds=10),
        Job("ticketing.planned_maintenance", maintenance_job, seconds=3600, run_at_start=True),
    ]
