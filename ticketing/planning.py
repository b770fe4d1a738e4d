"""The live plan: load today's :class:`Problem` from the database, place tickets with the optimizer
and write the plan back. The optimizer itself (:mod:`ticketing.optimizer`) stays pure.

The plan *is* the set of active ``assignments``: each is a stop on its technician's route, with a
``sequence``, planned arrival/start/end, an optional warehouse pickup and the explanation of why it
went there. Every change to the plan happens under one transaction-level advisory lock
(:data:`PLAN_LOCK_KEY`), taken AFTER the ticket's row lock, so placements serialize and the lock
order stays alarm → ticket → plan.

Time: minutes from midnight UTC of the day being planned (``PlanningClock``). Technicians with no
``technician_shifts`` rows at all are available around the clock (until the end of the planning
horizon); with shifts, the shift containing now (or the next one starting within the horizon) is
used, cut short by time off. Routes start where the technician is (last known position, else home)
and are planned back to that point.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ticketing.geo import TravelModel
from ticketing.optimizer import (
    CachedTravel,
    Explanation,
    Insertion,
    Job,
    Plan,
    Problem,
    Stop,
    Tech,
    Warehouse,
    explain_job,
    insert_with_bump,
    simulate,
)
from ticketing.optimizer.model import HORIZON_MIN

log = logging.getLogger(__name__)

#: Advisory lock guarding every write to the plan ("fieldwatch plan").
PLAN_LOCK_KEY = 0x6677_706C
#: Ticket statuses whose assignment is a stop on a route; the first two are under way.
IN_PROGRESS = ("en_route", "on_site")
PLANNED = ("assigned", *IN_PROGRESS)


@dataclass(frozen=True, slots=True)
class PlanningClock:
    """Converts between timestamps and the optimizer's minutes from midnight UTC of ``now``'s day."""

    now: datetime

    @property
    def day_start(self) -> datetime:
        n = self.now.astimezone(UTC)
        return n.replace(hour=0, minute=0, second=0, microsecond=0)

    def minutes(self, ts: datetime | None, default: float) -> float:
        if ts is None:
            return default
        return (ts - self.day_start).total_seconds() / 60.0

    def at(self, minutes: float) -> datetime:
        return self.day_start + timedelta(minutes=minutes)

    @property
    def now_min(self) -> float:
        return self.minutes(self.now, 0.0)

    @property
    def horizon_end(self) -> datetime:
        return self.at(HORIZON_MIN)


@dataclass
class Snapshot:
    """Today's problem and the current plan as stored, plus what must not move."""

    clock: PlanningClock
    problem: Problem
    plan: Plan
    in_progress: set[int] = field(default_factory=set)  # ticket ids under way (never moved)
    locked: set[int] = field(default_factory=set)  # assignments a dispatcher locked
    planned_start: dict[int, float] = field(default_factory=dict)  # ticket → stored start (minutes)
    assignment_ids: dict[int, int] = field(default_factory=dict)  # ticket → active assignment id

    def signature(self) -> tuple[tuple[int, tuple[Stop, ...]], ...]:
        """What the stored plan looks like: changes between two reads mean someone else planned."""
        return tuple(sorted((t, tuple(s)) for t, s in self.plan.routes.items()))


# -- loading -----------------------------------------------------------------------------------------
_TECHS = """
SELECT t.id, t.name, t.home_lat, t.home_lon, t.current_lat, t.current_lon, t.available,
       COALESCE((SELECT jsonb_object_agg(s.code, ts.level) FROM technician_skills ts
                 JOIN skills s ON s.id = ts.skill_id WHERE ts.technician_id = t.id), '{}')
       || COALESCE((SELECT jsonb_object_agg(s.code || '@' || ms.equipment_model, ms.level)
                    FROM technician_model_skills ms JOIN skills s ON s.id = ms.skill_id
                    WHERE ms.technician_id = t.id), '{}') AS skills,
       COALESCE((SELECT array_agg(tool_code) FROM technician_tools WHERE technician_id = t.id), '{}') AS tools,
       COALESCE((SELECT jsonb_object_agg(part_code, quantity) FROM van_stock WHERE technician_id = t.id), '{}') AS van,
       EXISTS (SELECT 1 FROM technician_shifts WHERE technician_id = t.id) AS has_shifts,
       (SELECT jsonb_agg(jsonb_build_array(starts_at, ends_at, max_overtime_minutes) ORDER BY starts_at)
          FROM technician_shifts WHERE technician_id = t.id AND ends_at > %(now)s AND starts_at < %(until)s) AS shifts,
       (SELECT jsonb_agg(jsonb_build_array(starts_at, ends_at, reason) ORDER BY starts_at)
          FROM technician_time_off WHERE technician_id = t.id AND ends_at > %(now)s AND starts_at < %(until)s) AS off
FROM technicians t ORDER BY t.id
"""

_JOBS = """
SELECT t.id, t.status, t.priority, t.required_skill, t.required_level, t.required_tools, t.service_minutes,
       t.window_start, t.window_end, t.due_at, t.pinned_technician_id, t.level_per_model, d.equipment_model,
       s.latitude, s.longitude, COALESCE(seg.weight, 1.0) AS weight,
       COALESCE((SELECT jsonb_object_agg(part_code, quantity) FROM ticket_parts WHERE ticket_id = t.id), '{}') AS parts,
       a.id AS assignment_id, a.technician_id, a.sequence, a.planned_start, a.pickup_warehouse_id, a.locked
FROM tickets t
JOIN devices d ON d.id = t.device_id
JOIN sites s ON s.id = d.site_id
JOIN clients c ON c.id = s.client_id
LEFT JOIN sla_segments seg ON seg.name = c.segment
LEFT JOIN assignments a ON a.ticket_id = t.id AND a.active
WHERE (t.status = ANY(%(planned)s) AND a.id IS NOT NULL) OR t.id = ANY(%(extra)s)
ORDER BY a.technician_id, a.sequence NULLS LAST, a.assigned_at, t.id
"""


def _ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _tech(row: dict[str, Any], clock: PlanningClock) -> Tech:
    home = (row["home_lat"], row["home_lon"])
    start = (row["current_lat"], row["current_lon"]) if row["current_lat"] is not None else home
    base = dict(
        id=row["id"],
        name=row["name"],
        start=start,
        skills=dict(row["skills"]),
        tools=frozenset(row["tools"]),
        van=dict(row["van"]),
    )
    if not row["available"]:
        return Tech(**base, available=False, unavailable_reason="off duty")
    shifts = row["shifts"] or []
    if not row["has_shifts"]:  # no calendar: around the clock, minus time off
        shifts = [(clock.day_start, clock.horizon_end, 0)]
    off = [(_ts(a), _ts(b), why) for a, b, why in (row["off"] or [])]
    for s_raw, e_raw, overtime in shifts:
        s, e = max(_ts(s_raw), clock.now), _ts(e_raw)
        for o_start, o_end, _why in off:  # time off cuts the shift: skip past it, or end before it
            if o_start <= s < o_end:
                s = o_end
            elif s < o_start < e:
                e = o_start
        if s < e:
            return Tech(**base, shift=(clock.minutes(s, 0), clock.minutes(e, 0)), max_overtime_min=float(overtime))
    current_off = next((why for a, b, why in off if a <= clock.now < b), None)
    why = f"time off ({current_off})" if current_off else "outside every shift"
    return Tech(**base, available=False, unavailable_reason=why)


def _job(row: dict[str, Any], clock: PlanningClock) -> Job:
    return Job(
        id=row["id"],
        location=(row["latitude"], row["longitude"]),
        service_min=float(row["service_minutes"]),
        skill=row["required_skill"],
        level=row["required_level"],
        parts=dict(row["parts"]),
        tools=frozenset(row["required_tools"] or ()),
        window=(clock.minutes(row["window_start"], 0.0), clock.minutes(row["window_end"], HORIZON_MIN)),
        sla_due=clock.minutes(row["due_at"], HORIZON_MIN),
        weight=float(row["weight"]),
        priority=row["priority"],
        pinned_to=row["pinned_technician_id"],
        model=row["equipment_model"] if row["level_per_model"] else None,
    )


def load_snapshot(conn: psycopg.Connection, now: datetime, extra_tickets: Iterable[int] = ()) -> Snapshot:
    """Today's problem: every technician, every planned ticket, plus ``extra_tickets`` (to be placed)."""
    clock = PlanningClock(now)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_TECHS, {"now": now, "until": clock.horizon_end})
        techs = tuple(_tech(r, clock) for r in cur.fetchall())
        cur.execute("SELECT id, name, latitude, longitude, pickup_minutes FROM warehouses ORDER BY id")
        wh_rows = cur.fetchall()
        cur.execute("SELECT warehouse_id, part_code, quantity FROM warehouse_stock")
        stock: dict[int, dict[str, int]] = {}
        for r in cur.fetchall():
            stock.setdefault(r["warehouse_id"], {})[r["part_code"]] = r["quantity"]
        cur.execute(_JOBS, {"planned": list(PLANNED), "extra": list(extra_tickets)})
        job_rows = cur.fetchall()
    warehouses = tuple(
        Warehouse(
            r["id"], r["name"], (r["latitude"], r["longitude"]), stock.get(r["id"], {}), float(r["pickup_minutes"])
        )
        for r in wh_rows
    )
    routes: dict[int, list[Stop]] = {t.id: [] for t in techs}
    snap_jobs: list[Job] = []
    snap = Snapshot(clock, Problem((), ()), Plan({}))
    for r in job_rows:
        snap_jobs.append(_job(r, clock))
        if r["assignment_id"] is None:
            continue
        snap.assignment_ids[r["id"]] = r["assignment_id"]
        if r["pickup_warehouse_id"] is not None:
            routes[r["technician_id"]].append(Stop("pickup", r["id"], r["pickup_warehouse_id"]))
        routes[r["technician_id"]].append(Stop("job", r["id"]))
        if r["status"] in IN_PROGRESS:
            snap.in_progress.add(r["id"])
        if r["locked"]:
            snap.locked.add(r["id"])
        if r["planned_start"] is not None:
            snap.planned_start[r["id"]] = clock.minutes(r["planned_start"], 0)
    snap.problem = Problem(tuple(snap_jobs), techs, warehouses, now=clock.now_min)
    snap.plan = Plan({t: tuple(s) for t, s in routes.items()})
    return snap


# -- writing -----------------------------------------------------------------------------------------
def explanation_json(exp: Explanation, travel_km: float | None = None) -> dict[str, Any]:
    """What the API shows for an assignment (or an unassigned ticket)."""
    return {
        "text": exp.text(),
        "cost": exp.cost,
        "runner_up_id": exp.runner_up_id,
        "runner_up_name": exp.runner_up_name,
        "runner_up_cost": exp.runner_up_cost,
        "cost_difference": exp.cost_difference,
        "deciding": list(exp.deciding),
        "blockers": list(exp.blockers),
    }


def write_route(
    conn: psycopg.Connection, snap: Snapshot, travel: TravelModel, tech_id: int, stops: tuple[Stop, ...]
) -> None:
    """Store sequence, pickups and planned times of every job on ``tech_id``'s route."""
    tech = snap.problem.tech(tech_id)
    result = simulate(snap.problem, travel, tech, stops)
    clock = snap.clock
    pickups = {s.job_id: s.warehouse_id for s in stops if s.kind == "pickup"}
    seq = 0
    for visit in result.visits:
        if visit.stop.kind != "job":
            continue
        conn.execute(
            """UPDATE assignments SET sequence = %s, eta_at = %s, planned_start = %s, planned_end = %s,
                      pickup_warehouse_id = %s, eta_minutes = %s
               WHERE ticket_id = %s AND active AND technician_id = %s""",
            (
                seq,
                clock.at(visit.arrive),
                clock.at(visit.start),
                clock.at(visit.end),
                pickups.get(visit.stop.job_id),
                max(0.0, visit.arrive - clock.now_min),
                visit.stop.job_id,
                tech_id,
            ),
        )
        seq += 1


@dataclass(frozen=True, slots=True)
class Placement:
    """Where :func:`place_ticket` put a ticket, and why."""

    ticket_id: int
    tech_id: int | None
    tech_name: str | None
    km: float | None
    eta_minutes: float | None
    reason: str
    explanation: Explanation
    bumped: tuple[int, ...] = ()
    unassigned_bumped: tuple[int, ...] = ()


def placement_reason(exp: Explanation, km: float, eta: float) -> str:
    """One line for ``assignments.reason``."""
    msg = f"cheapest insertion: {km:.1f} km, ETA {eta:.0f} min, cost {exp.cost:.1f}"
    if exp.runner_up_name is not None:
        msg += f"; runner-up {exp.runner_up_name} ({exp.cost_difference:+.1f})"  # signed: it may be cheaper alone
    else:
        msg += "; no other technician could take it"
    if exp.deciding:
        msg += "; ruled out: " + "; ".join(exp.deciding)
    return msg


def lock_plan(conn: psycopg.Connection) -> None:
    """Serialize plan changes until this transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PLAN_LOCK_KEY,))


def place_ticket(
    conn: psycopg.Connection, ticket_id: int, travel: TravelModel, now: datetime | None = None
) -> Placement:
    """Insert ``ticket_id`` into today's plan (cheapest feasible insertion; an urgent ticket may bump
    one less urgent job) and store the result. The caller holds the ticket's row lock and commits."""
    now = now or datetime.now(UTC)
    lock_plan(conn)
    travel = CachedTravel(travel)
    snap = load_snapshot(conn, now, extra_tickets=[ticket_id])
    job = snap.problem.job(ticket_id)
    frozen = snap.in_progress | snap.locked
    ins: Insertion = insert_with_bump(snap.problem, travel, snap.plan, job, frozen=frozen)
    exp = explain_job(snap.problem, travel, ins.plan, ticket_id)
    if ins.tech_id is None:
        reason = exp.text()
        conn.execute(
            "UPDATE tickets SET unassigned_reason = %s, unassigned_blockers = %s, updated_at = now() WHERE id = %s",
            (reason, Jsonb(list(exp.blockers)), ticket_id),
        )
        return Placement(ticket_id, None, None, None, None, reason, exp)
    unassigned_bumped = _apply_bumps(conn, snap, ins, ticket_id)
    tech = snap.problem.tech(ins.tech_id)
    visit = simulate(snap.problem, travel, tech, ins.plan.routes[ins.tech_id]).visit_of(ticket_id)
    assert visit is not None  # the insertion put it on this route
    km, eta = visit.km, max(0.0, visit.arrive - snap.clock.now_min)
    reason = placement_reason(exp, km, eta)
    conn.execute(
        """INSERT INTO assignments (ticket_id, technician_id, distance_km, eta_minutes, reason, explanation, origin)
           VALUES (%s, %s, %s, %s, %s, %s, 'auto')""",
        (ticket_id, tech.id, km, eta, reason, Jsonb(explanation_json(exp))),
    )
    conn.execute(
        """UPDATE tickets SET status = 'assigned', unassigned_reason = NULL, unassigned_blockers = '[]',
                  updated_at = now() WHERE id = %s""",
        (ticket_id,),
    )
    touched = {ins.tech_id, *(snap.plan.tech_of(b) for b in ins.bumped), *(ins.plan.tech_of(b) for b in ins.bumped)}
    for tech_id in touched:
        if tech_id is not None:
            write_route(conn, snap, travel, tech_id, ins.plan.routes[tech_id])
    return Placement(ticket_id, tech.id, tech.name, km, eta, reason, exp, tuple(ins.bumped), unassigned_bumped)


def _apply_bumps(conn: psycopg.Connection, snap: Snapshot, ins: Insertion, for_ticket: int) -> tuple[int, ...]:
    """Move or unassign the jobs an emergency bumped; returns those left without a technician."""
    left: list[int] = []
    for job_id in ins.bumped:
        new_tech = ins.plan.tech_of(job_id)
        conn.execute(
            "UPDATE assignments SET active = false, ended_at = now() WHERE ticket_id = %s AND active", (job_id,)
        )
        if new_tech is None:
            left.append(job_id)
            conn.execute(
                """UPDATE tickets SET status = 'new', updated_at = now(),
                          unassigned_reason = %s WHERE id = %s""",
                (f"bumped by more urgent ticket {for_ticket}; waiting for a free slot", job_id),
            )
        else:
            conn.execute(
                """INSERT INTO assignments (ticket_id, technician_id, reason, origin)
                   VALUES (%s, %s, %s, 'auto')""",
                (job_id, new_tech, f"moved to make room for more urgent ticket {for_ticket}"),
            )
    return tuple(left)


def frozen_prefixes(snap: Snapshot, freeze_minutes: float) -> dict[int, list[Stop]]:
    """Per technician, the route prefix re-optimisation must keep: jobs under way, locked jobs and
    jobs starting within the freeze horizon (and everything before them on the route)."""
    horizon = snap.clock.now_min + freeze_minutes
    out: dict[int, list[Stop]] = {}
    for tech_id, stops in snap.plan.routes.items():
        last = -1
        for i, s in enumerate(stops):
            if s.kind != "job":
                continue
            j = s.job_id
            if j in snap.in_progress or j in snap.locked or snap.planned_start.get(j, horizon + 1) <= horizon:
                last = i
        if last >= 0:
            out[tech_id] = list(stops[: last + 1])
    return out


def moved_jobs(before: Plan, after: Plan) -> set[int]:
    """Jobs whose technician changed between two plans."""
    a, b = before.assigned(), after.assigned()
    return {j for j in set(a) | set(b) if a.get(j) != b.get(j)}


def job_ids(plan: Plan) -> Collection[int]:
    return plan.assigned().keys()
