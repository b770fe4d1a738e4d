"""The one judge of a plan: route simulation, hard-constraint checks and cost. Pure.

Every engine (OR-Tools, the greedy baseline, incremental insertion) is checked by
:func:`check_plan`, and explanations compare technicians with :func:`simulate`, so "feasible" and
"cheaper" mean the same thing everywhere.

A route starts at ``max(shift start, problem.now)`` at the technician's start position, drives to
each stop (waiting for a job's window to open), serves it, and drives home. Hard constraints:

* availability; skill and level (a level recorded for the job's equipment model, keyed
  ``"pump@C200"``, replaces the general level); tools; pins;
* parts: from the van (stock is consumed along the route) or from a pickup stop at a warehouse that
  stocks them, earlier on the same route;
* the job's time window (service must start by its end);
* home by shift end + the allowed overtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ticketing.geo import LatLon, TravelModel
from ticketing.optimizer.model import Job, Plan, Problem, Stop, Tech, Warehouse


class CachedTravel:
    """Memoises a :class:`TravelModel` (the same pairs are asked for again and again)."""

    def __init__(self, inner: TravelModel) -> None:
        self.inner = inner
        self._memo: dict[tuple[LatLon, LatLon], tuple[float, float]] = {}

    def travel(self, from_latlon: LatLon, to_latlon: LatLon) -> tuple[float, float]:
        key = (from_latlon, to_latlon)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = (0.0, 0.0) if from_latlon == to_latlon else self.inner.travel(*key)
        return hit


def model_skill_key(skill: str, model: str) -> str:
    """How a model-specific level is keyed in :attr:`Tech.skills`: ``"pump@C200"``."""
    return f"{skill}@{model}"


def skill_level(tech: Tech, job: Job) -> tuple[int, str | None]:
    """The technician's level for the job's skill, and the equipment model it is for (None: general).

    A level recorded for the job's equipment model REPLACES the general level for that skill (a
    technician may be level 3 on pumps but level 1 on the C200 chiller), so the model entry counts
    even when it is lower.
    """
    if job.skill is None:
        return 5, None
    if job.model is not None:
        per_model = tech.skills.get(model_skill_key(job.skill, job.model))
        if per_model is not None:
            return per_model, job.model
    return tech.skills.get(job.skill, 0), None


def covers(stock: Mapping[str, int], parts: Mapping[str, int]) -> bool:
    return all(stock.get(p, 0) >= q for p, q in parts.items())


def missing(stock: Mapping[str, int], parts: Mapping[str, int]) -> list[str]:
    return [f"{p}×{q - stock.get(p, 0)}" for p, q in sorted(parts.items()) if stock.get(p, 0) < q]


def stocking_warehouses(problem: Problem, job: Job) -> list[Warehouse]:
    return [w for w in problem.warehouses if job.parts and covers(w.stock, job.parts)]


def tech_blockers(problem: Problem, job: Job, tech: Tech) -> list[str]:
    """Why ``tech`` can never take ``job``, whatever the route (empty: eligible)."""
    out: list[str] = []
    if not tech.available:
        why = f" ({tech.unavailable_reason})" if tech.unavailable_reason else ""
        out.append(f"{tech.name} is not available{why}")
    if job.pinned_to is not None and job.pinned_to != tech.id:
        out.append(f"pinned to technician {job.pinned_to}")
    if job.skill is not None:
        have, model = skill_level(tech, job)
        if model is not None and have < job.level:
            out.append(
                f"{tech.name} lacks skill {job.skill} level {job.level} on {model}: "
                f"level {have} on {model} < required {job.level}"
            )
        elif have < job.level:
            out.append(f"{tech.name} lacks skill {job.skill} level {job.level}" + (f" (has {have})" if have else ""))
    lacking_tools = sorted(job.tools - tech.tools)
    if lacking_tools:
        out.append(f"{tech.name} lacks tool(s) {', '.join(lacking_tools)}")
    if job.parts and not covers(tech.van, job.parts) and not stocking_warehouses(problem, job):
        lacking = ", ".join(missing(tech.van, job.parts))
        out.append(f"part(s) {lacking} neither in {tech.name}'s van nor in any warehouse")
    return out


@dataclass(frozen=True, slots=True)
class Visit:
    """When a stop happens on a simulated route."""

    stop: Stop
    arrive: float
    start: float
    end: float
    km: float  # driven to get here


@dataclass(slots=True)
class RouteResult:
    """A simulated route: its schedule, totals, cost and hard violations (empty = feasible)."""

    tech_id: int
    visits: list[Visit] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    travel_km: float = 0.0
    travel_min: float = 0.0
    overtime_min: float = 0.0
    weighted_lateness_min: float = 0.0
    late_jobs: list[int] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    cost: float = 0.0

    @property
    def feasible(self) -> bool:
        return not self.violations

    def visit_of(self, job_id: int) -> Visit | None:
        for v in self.visits:
            if v.stop.kind == "job" and v.stop.job_id == job_id:
                return v
        return None


def simulate(problem: Problem, travel: TravelModel, tech: Tech, stops: tuple[Stop, ...] | list[Stop]) -> RouteResult:
    """Drive ``stops`` as early as possible and judge the result."""
    w = problem.weights
    res = RouteResult(tech.id)
    t = res.start = max(tech.shift[0], problem.now)
    pos = tech.start
    van = dict(tech.van)
    picked: dict[int, int] = {}  # job id → warehouse id
    seen: set[int] = set()
    if stops and not tech.available:
        res.violations.append(f"{tech.name} is not available but has {len(stops)} stop(s)")
    for stop in stops:
        job = problem._jobs.get(stop.job_id)
        if job is None:
            res.violations.append(f"unknown job {stop.job_id}")
            continue
        if stop.kind == "pickup":
            wh = problem._warehouses.get(stop.warehouse_id) if stop.warehouse_id is not None else None
            if wh is None:
                res.violations.append(f"job {job.id}: pickup at unknown warehouse {stop.warehouse_id}")
                continue
            if not covers(wh.stock, job.parts):
                res.violations.append(f"job {job.id}: {wh.name} lacks {', '.join(missing(wh.stock, job.parts))}")
            km, mins = travel.travel(pos, wh.location)
            arrive = t + mins
            res.visits.append(Visit(stop, arrive, arrive, arrive + wh.pickup_min, km))
            res.travel_km += km
            res.travel_min += mins
            t, pos = arrive + wh.pickup_min, wh.location
            picked[job.id] = wh.id
            continue
        if job.id in seen:
            res.violations.append(f"job {job.id} visited twice")
        seen.add(job.id)
        for why in tech_blockers(problem, job, tech):
            if "neither in" not in why:
                res.violations.append(f"job {job.id}: {why}")
        if job.parts:
            if job.id in picked:
                pass
            elif covers(van, job.parts):
                for p, q in job.parts.items():
                    van[p] -= q
            else:
                res.violations.append(
                    f"job {job.id}: van short of {', '.join(missing(van, job.parts))} and no warehouse pickup before it"
                )
        km, mins = travel.travel(pos, job.location)
        arrive = t + mins
        start = max(arrive, job.window[0])
        if start > job.window[1] + 1e-6:
            res.violations.append(f"job {job.id}: arrives {start:.0f} after its window closes at {job.window[1]:.0f}")
        late = max(0.0, start - job.sla_due)
        if late > 1e-6:
            res.late_jobs.append(job.id)
            res.weighted_lateness_min += late * job.weight
        res.visits.append(Visit(stop, arrive, start, start + job.service_min, km))
        res.travel_km += km
        res.travel_min += mins
        t, pos = start + job.service_min, job.location
    orphan = set(picked) - seen
    for job_id in sorted(orphan):
        res.violations.append(f"job {job_id}: parts picked up but the job is not on this route")
    km, mins = travel.travel(pos, tech.home)
    res.travel_km += km
    res.travel_min += mins
    res.end = t + mins if stops else res.start
    res.overtime_min = max(0.0, res.end - tech.shift[1])
    if res.overtime_min > tech.max_overtime_min + 1e-6:
        res.violations.append(
            f"{tech.name} home at {res.end:.0f}, past shift end {tech.shift[1]:.0f} + {tech.max_overtime_min:.0f} min"
        )
    busy = res.end - res.start if stops else 0.0
    res.cost = (
        w.travel * res.travel_min
        + w.lateness * res.weighted_lateness_min
        + w.overtime * res.overtime_min
        + w.balance * busy * busy / 60.0
    )
    return res


@dataclass(slots=True)
class PlanResult:
    """A judged plan."""

    routes: dict[int, RouteResult]
    violations: list[str]
    cost: float
    travel_km: float
    late_jobs: list[int]
    unassigned: list[int]

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def sla_breaches(self) -> int:
        """Jobs served after their SLA target plus jobs nobody serves."""
        return len(self.late_jobs) + len(self.unassigned)


def unassigned_penalty(problem: Problem, job: Job) -> float:
    return problem.weights.unassigned * job.weight * (6 - job.priority)


def check_plan(problem: Problem, travel: TravelModel, plan: Plan) -> PlanResult:
    """Simulate every route; cross-route checks (each job at most once); total cost."""
    routes: dict[int, RouteResult] = {}
    violations: list[str] = []
    where: dict[int, int] = {}
    for tech_id, stops in plan.routes.items():
        tech = problem._techs.get(tech_id)
        if tech is None:
            violations.append(f"unknown technician {tech_id}")
            continue
        r = routes[tech_id] = simulate(problem, travel, tech, stops)
        violations += [f"route {tech.name}: {v}" for v in r.violations]
        for s in stops:
            if s.kind == "job":
                if s.job_id in where and where[s.job_id] != tech_id:
                    violations.append(f"job {s.job_id} on two routes ({where[s.job_id]} and {tech_id})")
                where[s.job_id] = tech_id
    unassigned = [j.id for j in problem.jobs if j.id not in where]
    cost = sum(r.cost for r in routes.values()) + sum(unassigned_penalty(problem, problem.job(j)) for j in unassigned)
    return PlanResult(
        routes=routes,
        violations=violations,
        cost=cost,
        travel_km=sum(r.travel_km for r in routes.values()),
        late_jobs=[j for r in routes.values() for j in r.late_jobs],
        unassigned=unassigned,
    )
