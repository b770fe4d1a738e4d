"""Placing one job into an existing plan: cheapest feasible insertion, per-technician options
(what explanations compare), the greedy nearest-qualified baseline, and emergency bumping. Pure.

Insertion never moves a stop that is already planned: a new ticket costs one pass over the
technicians' routes (milliseconds), so it can run on every ticket; the periodic re-optimisation
(:mod:`ticketing.optimizer.engine`) improves the whole day afterwards.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from ticketing.geo import TravelModel
from ticketing.optimizer.model import Job, Plan, Problem, Stop, Tech, Warehouse
from ticketing.optimizer.routes import check_plan, covers, simulate, stocking_warehouses, tech_blockers

#: How many warehouses (nearest to the site first) an insertion considers for a pickup.
WAREHOUSE_CHOICES = 2


@dataclass(slots=True)
class TechOption:
    """The best way ``tech_id`` could take a job, or why they cannot."""

    tech_id: int
    tech_name: str
    feasible: bool
    delta_cost: float = float("inf")  # added plan cost
    stops: tuple[Stop, ...] = ()  # the technician's route with the job inserted
    blockers: list[str] = field(default_factory=list)
    travel_min: float = 0.0  # added driving


def _candidate_routes(
    problem: Problem, travel: TravelModel, tech: Tech, route: tuple[Stop, ...], job: Job, first_pos: int
) -> Iterator[tuple[Stop, ...]]:
    """Every route with ``job`` inserted at or after ``first_pos`` (with a pickup when needed)."""
    van_ok = not job.parts or covers(tech.van, job.parts)
    whs: list[Warehouse] = []
    if job.parts:
        whs = sorted(stocking_warehouses(problem, job), key=lambda w: travel.travel(w.location, job.location)[1])
        whs = whs[:WAREHOUSE_CHOICES]
    for pos in range(first_pos, len(route) + 1):
        if van_ok:
            yield (*route[:pos], Stop("job", job.id), *route[pos:])
        for wh in whs:
            yield (*route[:pos], Stop("pickup", job.id, wh.id), Stop("job", job.id), *route[pos:])


def tech_options(
    problem: Problem,
    travel: TravelModel,
    plan: Plan,
    job: Job,
    frozen: Collection[int] = (),
) -> list[TechOption]:
    """For every technician, the cheapest feasible insertion of ``job`` (or the blockers), cheapest first.

    ``frozen`` job ids keep their place: nothing is inserted before them.
    """
    base = plan.without(job.id)
    out: list[TechOption] = []
    for tech in problem.techs:
        blockers = tech_blockers(problem, job, tech)
        if blockers:
            out.append(TechOption(tech.id, tech.name, False, blockers=blockers))
            continue
        route = tuple(base.routes.get(tech.id, ()))
        before = simulate(problem, travel, tech, route)
        first = max((i + 1 for i, s in enumerate(route) if s.job_id in frozen), default=0)
        best: TechOption | None = None
        why: list[str] = []
        for stops in _candidate_routes(problem, travel, tech, route, job, first):
            after = simulate(problem, travel, tech, stops)
            if not after.feasible:
                if not why:
                    why = [v for v in after.violations if v not in before.violations] or after.violations
                continue
            delta = after.cost - before.cost
            if best is None or delta < best.delta_cost - 1e-9:
                added_min = after.travel_min - before.travel_min
                best = TechOption(tech.id, tech.name, True, delta, stops, travel_min=added_min)
        if best is None:
            out.append(TechOption(tech.id, tech.name, False, blockers=why[:1] or ["no feasible position"]))
        else:
            out.append(best)
    out.sort(key=lambda o: (not o.feasible, o.delta_cost, o.tech_id))
    return out


@dataclass(slots=True)
class Insertion:
    """The outcome of placing one job: the new plan and the options that were compared."""

    plan: Plan
    tech_id: int | None
    options: list[TechOption]
    bumped: list[int] = field(default_factory=list)  # jobs moved or unassigned to make room

    @property
    def chosen(self) -> TechOption | None:
        return next((o for o in self.options if o.tech_id == self.tech_id), None)


def insert_job(problem: Problem, travel: TravelModel, plan: Plan, job: Job, frozen: Collection[int] = ()) -> Insertion:
    """Cheapest feasible insertion; the job is recorded unassigned when nothing is feasible."""
    options = tech_options(problem, travel, plan, job, frozen)
    base = plan.without(job.id)
    best = options[0] if options and options[0].feasible else None
    if best is None:
        return Insertion(Plan(base.routes, (*base.unassigned, job.id)), None, options)
    return Insertion(base.with_route(best.tech_id, best.stops), best.tech_id, options)


def insert_with_bump(
    problem: Problem, travel: TravelModel, plan: Plan, job: Job, frozen: Collection[int] = ()
) -> Insertion:
    """Insert ``job``; if nobody can take it, bump ONE less urgent, unfrozen job from a route.

    Minimal disruption: options are ranked by (the bumped job ends unassigned, added cost); the
    bumped job is re-inserted elsewhere when it fits.
    """
    first = insert_job(problem, travel, plan, job, frozen)
    if first.tech_id is not None:
        return first
    best: tuple[tuple[bool, float], Insertion] | None = None
    base = plan.without(job.id)
    before_cost = None
    for _tech_id, stops in base.routes.items():
        for s in stops:
            if s.kind != "job" or s.job_id in frozen:
                continue
            victim = problem.job(s.job_id)
            if victim.priority <= job.priority:
                continue
            trial = base.without(victim.id)
            ins = insert_job(problem, travel, trial, job, frozen)
            if ins.tech_id is None:
                continue
            re = insert_job(problem, travel, ins.plan, victim, frozen)
            if before_cost is None:
                before_cost = check_plan(problem, travel, base).cost
            key = (re.tech_id is None, check_plan(problem, travel, re.plan).cost - before_cost)
            if best is None or key < best[0]:
                best = (key, Insertion(re.plan, ins.tech_id, ins.options, bumped=[victim.id]))
    return best[1] if best is not None else first


def greedy_nearest(problem: Problem, travel: TravelModel) -> Plan:
    """The baseline: most urgent job first, to the nearest technician (from where their route ends
    now) who can append it feasibly — no look-ahead, no re-ordering."""
    routes: dict[int, tuple[Stop, ...]] = {t.id: () for t in problem.techs}
    ends = {t.id: t.start for t in problem.techs}
    unassigned: list[int] = []
    for job in sorted(problem.jobs, key=lambda j: (j.priority, j.sla_due, j.id)):
        ranked = sorted(
            (t for t in problem.techs if not tech_blockers(problem, job, t)),
            key=lambda t: (travel.travel(ends[t.id], job.location)[1], t.id),
        )
        for tech in ranked:
            route = routes[tech.id]
            options = []
            if not job.parts or covers(tech.van, job.parts):
                options.append((*route, Stop("job", job.id)))
            whs = sorted(stocking_warehouses(problem, job), key=lambda w: travel.travel(ends[tech.id], w.location)[1])
            options += [(*route, Stop("pickup", job.id, w.id), Stop("job", job.id)) for w in whs[:1]]
            ok = next((o for o in options if simulate(problem, travel, tech, o).feasible), None)
            if ok is not None:
                routes[tech.id] = ok
                ends[tech.id] = job.location
                break
        else:
            unassigned.append(job.id)
    return Plan(routes, tuple(unassigned))
