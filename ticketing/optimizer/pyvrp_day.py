"""The field-service day as a PyVRP 0.14 model — the measured alternative to the OR-Tools engine.

Pure: a :class:`Problem` in, a :class:`Plan` out, judged by :func:`check_plan` like every engine
(docs/dispatch.md compares the two on the day bench). What PyVRP 0.14 can express, and how:

* **technicians** — one vehicle type each (available ones only): own start/end depot, shift start
  fixed (``start_late = tw_early``, as our judge starts routes at shift start), ``shift_duration``
  = the shift, ``max_overtime`` = the allowed overtime, overtime costed per second
  (``unit_overtime_cost``) — our soft overtime, exactly;
* **eligibility** (skill and level, tools, pins) — one routing *profile* per technician whose
  duration into every job they may not take is prohibitive (``_BLOCKED``), so any visit there is
  time warp, i.e. infeasible;
* **van stock** — one load dimension per part type: the van's quantity is the capacity and a job
  delivers its parts; a van short of a part cannot take the job;
* **warehouse pickup** — only for jobs whose parts no eligible technician's van holds: an optional
  :class:`~pyvrp.Shipment` from the nearest stocking warehouse to the site (pickup then job on one
  route). A job is *either* van-served *or* via-warehouse in this model, never both alternatives
  (PyVRP groups hold clients, not shipments) — OR-Tools keeps both;
* **site window** — hard time window, as in our judge;
* **SLA target** (soft lateness, which PyVRP cannot cost per minute) — a mutually exclusive,
  optional client group of copies of the job: an *on-time* copy whose window closes at the SLA
  target, optionally one copy per lateness bucket (:data:`LATE_STEPS_MIN`), and a last one closing
  with the site window; each copy's prize is lowered by the weighted lateness charged for it
  (:data:`LATE_EQUIV_MIN` minutes for the late copy by default). Lateness is priced in steps, not
  per minute;
* **unassigned** — every job is optional with our unassigned penalty as its prize.

Not expressed: the workload-balance term, frozen route prefixes (the re-optimisation's freeze
horizon; PyVRP takes an initial solution but cannot pin a prefix), and a van-or-warehouse choice
per job. Travel cost is driving seconds, like the OR-Tools engine's arc cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ticketing.geo import LatLon, TravelModel
from ticketing.optimizer.model import Plan, Problem, Stop
from ticketing.optimizer.routes import check_plan, covers, stocking_warehouses, tech_blockers, unassigned_penalty

#: Integer cost units per driving second (overtime weight 1.5 needs an even scale).
_K = 2
#: Duration (s) into a job a technician may not take: ten days, far beyond any shift (time warp).
_BLOCKED = 10 * 24 * 3600
#: PyVRP caps its adaptive penalty per unit of excess load / time warp at 1e5 by default; our prizes
#: (the unassigned penalty, up to ~2.4e7) outweigh that, so the search would keep overloaded vans
#: and late visits. 1e8 per unit makes any violation dearer than any prize (no overflow: ≤ 1e14).
_MAX_PENALTY = 1e8
#: Lateness buckets (minutes past the SLA target) of a finer step approximation of per-minute
#: lateness, e.g. ``(30, 90, 180)``. Default none: one on-time and one late copy — on the day bench
#: more copies (≈ 3× the clients) made PyVRP serve fewer jobs in the same time (docs/dispatch.md).
LATE_STEPS_MIN: tuple[float, ...] = ()
#: Without buckets, a late visit is priced as this many minutes of weighted lateness.
LATE_EQUIV_MIN = 60.0


def _lateness_copies(lo: int, hi: int, due: int, steps: tuple[float, ...]) -> list[tuple[int, float]]:
    """(window close in s, minutes of lateness charged) per copy of a job: on time (charged 0), then
    one copy per bucket up to ``due + step`` charged at the bucket's middle, and the last copy up to
    the site window's end charged 1.5 × the last step (:data:`LATE_EQUIV_MIN` without buckets).
    One copy when the job cannot be late."""
    if not lo <= due < hi:
        return [(hi, 0.0)]  # never late, or the target is before the window opens: one copy
    out = [(due, 0.0)]
    prev = 0.0
    for step in steps:
        close = due + round(step * 60)
        if close >= hi:
            break
        out.append((close, (prev + step) / 2))
        prev = step
    out.append((hi, 1.5 * prev if prev else LATE_EQUIV_MIN))
    return out


@dataclass(slots=True)
class PyvrpDayResult:
    plan: Plan
    solve_s: float
    repairs: int
    feasible: bool  # PyVRP's own verdict on its best solution
    build_s: float


def _prize(cost_units: float) -> int:
    """Our cost units (1 = one minute driven) in PyVRP integer units (``_K`` per driving second)."""
    return round(cost_units * 60 * _K)


def solve_pyvrp_day(
    problem: Problem,
    travel: TravelModel,
    *,
    time_limit_s: float = 10.0,
    seed: int = 1,
    late_steps_min: tuple[float, ...] = LATE_STEPS_MIN,
) -> PyvrpDayResult:
    """Solve the day with PyVRP; the plan is re-judged and any stop breaking a hard constraint removed."""
    import numpy as np
    from pyvrp import (
        Client,
        ClientGroup,
        Depot,
        Location,
        PenaltyParams,
        ProblemData,
        Shipment,
        SolveParams,
        VehicleType,
        solve,
    )
    from pyvrp.stop import MaxRuntime

    t0 = time.perf_counter()
    techs = [t for t in problem.techs if t.available]
    if not techs or not problem.jobs:
        plan = Plan({t.id: () for t in problem.techs}, tuple(j.id for j in problem.jobs))
        return PyvrpDayResult(plan, 0.0, 0, True, time.perf_counter() - t0)
    w = problem.weights
    parts = sorted({p for j in problem.jobs for p in j.parts})
    zero = [0] * len(parts)

    # Locations: technicians' start and home, warehouses, then one per job.
    latlons: list[LatLon] = []

    def loc(ll: LatLon) -> int:
        latlons.append(ll)
        return len(latlons) - 1

    start_loc = [loc(t.start) for t in techs]
    home_loc = [loc(t.home) for t in techs]
    wh_loc = {wh.id: loc(wh.location) for wh in problem.warehouses}
    job_loc: dict[int, int] = {}
    depots = [Depot(i) for i in (*start_loc, *home_loc)]

    clients: list[Client] = []
    client_stop: list[Stop] = []
    groups: list[ClientGroup] = []
    shipments: list[Shipment] = []
    shipment_of: list[tuple[int, int]] = []  # (job id, warehouse id)
    eligible_of: dict[int, set[int]] = {}  # job id → vehicle indexes allowed
    for job in problem.jobs:
        eligible = {v for v, t in enumerate(techs) if not tech_blockers(problem, job, t)}
        lo = math.ceil(max(job.window[0], problem.now) * 60)
        hi = math.floor(job.window[1] * 60)
        if not eligible or lo > hi:
            continue
        eligible_of[job.id] = eligible
        li = job_loc[job.id] = loc(job.location)
        svc = math.ceil(job.service_min * 60)
        base = _prize(unassigned_penalty(problem, job))
        from_van = not job.parts or any(covers(techs[v].van, job.parts) for v in eligible)
        if not from_van:
            whs = stocking_warehouses(problem, job)
            if not whs:
                continue
            wh = min(whs, key=lambda x: travel.travel(x.location, job.location)[1])
            shipments.append(
                Shipment(
                    wh_loc[wh.id],
                    li,
                    pickup_service_duration=math.ceil(wh.pickup_min * 60),
                    delivery_tw_early=lo,
                    delivery_tw_late=hi,
                    delivery_service_duration=svc,
                    amount=zero,
                    prize=base,
                    required=False,
                    name=str(job.id),
                )
            )
            shipment_of.append((job.id, wh.id))
            continue
        demand = [int(job.parts.get(p, 0)) for p in parts]
        copies = _lateness_copies(lo, hi, math.floor(job.sla_due * 60), late_steps_min)
        per_min = w.lateness * job.weight
        top = max(charge for _late, charge in copies)
        members = []
        for late, charge in copies:
            members.append(len(clients))
            clients.append(
                Client(
                    li,
                    delivery=demand,
                    service_duration=svc,
                    tw_early=lo,
                    tw_late=late,
                    prize=base + _prize(per_min * (top - charge)),
                    required=False,
                    group=len(groups) if len(copies) > 1 else None,
                    name=str(job.id),
                )
            )
            client_stop.append(Stop("job", job.id))
        if len(copies) > 1:
            groups.append(ClientGroup(members, required=False))

    n = len(latlons)
    secs = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            if i != j:
                secs[i, j] = math.ceil(travel.travel(latlons[i], latlons[j])[1] * 60)
    durations = []
    for v in range(len(techs)):
        dur = secs.copy()
        blocked = [li for jid, li in job_loc.items() if v not in eligible_of[jid]]
        dur[:, blocked] = _BLOCKED
        np.fill_diagonal(dur, 0)
        durations.append(dur)
    vtypes = []
    for v, t in enumerate(techs):
        s0 = math.ceil(max(t.shift[0], problem.now) * 60)
        shift = max(0, math.floor(t.shift[1] * 60) - s0)
        ot = math.floor(t.max_overtime_min * 60)
        vtypes.append(
            VehicleType(
                1,
                capacity=[int(t.van.get(p, 0)) for p in parts],
                start_depot=v,
                end_depot=len(techs) + v,
                tw_early=s0,
                start_late=s0,
                tw_late=s0 + shift + ot,
                shift_duration=shift,
                max_overtime=ot,
                unit_distance_cost=round(_K * w.travel),
                unit_overtime_cost=round(_K * w.overtime),
                profile=v,
                name=str(t.id),
            )
        )
    data = ProblemData(
        [Location(*ll[::-1]) for ll in latlons],
        clients,
        depots,
        vtypes,
        # pyvrp 0.14's stub types the matrices np.ndarray[int], a shape where numpy expects one:
        # no real array matches it.
        [secs] * len(techs),  # type: ignore[list-item]
        durations,  # type: ignore[arg-type]
        groups,
        shipments,
    )
    build_s = time.perf_counter() - t0
    params = SolveParams(penalty=PenaltyParams(max_penalty=_MAX_PENALTY))
    res = solve(data, stop=MaxRuntime(max(0.1, time_limit_s - build_s)), seed=seed, display=False, params=params)

    out: dict[int, tuple[Stop, ...]] = {t.id: () for t in problem.techs}
    for route in res.best.routes():
        tech = techs[route.vehicle_type()]
        stops: list[Stop] = []
        for act in route.schedule():
            if act.is_client():
                stops.append(client_stop[act.idx])
            elif act.is_shipment():
                job_id, wh_id = shipment_of[act.idx]
                stops.append(Stop("pickup", job_id, wh_id) if act.is_pickup() else Stop("job", job_id))
        out[tech.id] = tuple(stops)
    served = {s.job_id for r in out.values() for s in r if s.kind == "job"}
    plan = Plan(out, tuple(j.id for j in problem.jobs if j.id not in served))
    plan, repairs = _repaired(problem, travel, plan)
    return PyvrpDayResult(plan, time.perf_counter() - t0, repairs, res.is_feasible(), build_s)


def _repaired(problem: Problem, travel: TravelModel, plan: Plan) -> tuple[Plan, int]:
    """Drop the last job of any route our judge rejects until none is left (counted, expected 0)."""
    repairs = 0
    while True:
        res = check_plan(problem, travel, plan)
        bad = next((tid for tid, r in res.routes.items() if not r.feasible), None)
        if bad is None:
            return plan, repairs
        victim = plan.routes[bad][-1].job_id
        plan = Plan(plan.without(victim).routes, (*plan.unassigned, victim))
        repairs += 1
