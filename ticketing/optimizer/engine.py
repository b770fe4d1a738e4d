"""The day's optimizer: OR-Tools routing with our constraints (the engine kept after the comparison
in docs/dispatch.md). Pure: a :class:`Problem` in, a checked :class:`Plan` out.

Modelling:

* one vehicle per available technician, from their start position to home, within shift start ..
  shift end + allowed overtime (overtime past shift end is a soft cost);
* a job is a disjunction of a *direct* node (served from van stock; one capacity dimension per
  part type with the van's quantity as capacity) and a *via-warehouse* node paired, on the same
  vehicle and later in time, with a pickup node at the nearest warehouse that stocks the parts;
  skipping the job costs :func:`unassigned_penalty`;
* eligibility (skill and level, tools, pins) restricts the vehicles a node may use;
* the job's window is a hard range on the time cumul; its SLA target a soft upper bound whose cost
  per minute is the segment weight × ``Weights.lateness``;
* travel time is the arc cost; a global span cost spreads the work across technicians;
* ``frozen`` routes (the freeze horizon, locked assignments) are fixed prefixes of the routes.

Every plan is re-judged by :func:`check_plan`; a stop OR-Tools' integer rounding would let through
is removed (``repairs`` counts them; none were seen on the bench), so a returned plan never breaks
a hard constraint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ticketing.geo import LatLon, TravelModel
from ticketing.optimizer.model import Plan, Problem, Stop
from ticketing.optimizer.routes import check_plan, covers, stocking_warehouses, tech_blockers, unassigned_penalty

_COST_SCALE = 10  # OR-Tools costs are integers: cost units per second ×10


@dataclass(slots=True)
class SolveResult:
    plan: Plan
    solve_s: float
    repairs: int
    status: str


def solve(
    problem: Problem,
    travel: TravelModel,
    *,
    time_limit_s: float = 10.0,
    initial: Plan | None = None,
    frozen: Mapping[int, Sequence[Stop]] | None = None,
) -> SolveResult:
    """Optimise the whole day; ``initial`` warm-starts, ``frozen`` fixes route prefixes per technician."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    t0 = time.perf_counter()
    frozen = {k: list(v) for k, v in (frozen or {}).items() if v}
    w = problem.weights
    techs = [t for t in problem.techs if t.available]
    nv = len(techs)
    if nv == 0 or not problem.jobs:
        plan = Plan({t.id: () for t in problem.techs}, tuple(j.id for j in problem.jobs))
        return SolveResult(plan, time.perf_counter() - t0, 0, "trivial")

    locs = [t.start for t in techs] + [t.home for t in techs]
    service = [0] * (2 * nv)
    stop_of: list[Stop | None] = [None] * (2 * nv)
    nodes_by_stop: dict[Stop, int] = {}
    direct: dict[int, int] = {}
    via: dict[int, tuple[int, int]] = {}  # job → (pickup node, via node)
    allowed: dict[int, list[int]] = {}

    def add(loc: LatLon, svc: float, stop: Stop) -> int:
        locs.append(loc)
        service.append(math.ceil(svc * 60))
        stop_of.append(stop)
        nodes_by_stop[stop] = len(locs) - 1
        return len(locs) - 1

    for job in problem.jobs:
        eligible = [v for v, t in enumerate(techs) if not tech_blockers(problem, job, t)]
        from_van = [v for v in eligible if not job.parts or covers(techs[v].van, job.parts)]
        if from_van:
            n = add(job.location, job.service_min, Stop("job", job.id))
            direct[job.id] = n
            allowed[n] = from_van
        whs = stocking_warehouses(problem, job) if job.parts else []
        if whs and eligible:
            wh = min(whs, key=lambda x: travel.travel(x.location, job.location)[1])
            p = add(wh.location, wh.pickup_min, Stop("pickup", job.id, wh.id))
            d = len(locs)
            locs.append(job.location)
            service.append(math.ceil(job.service_min * 60))
            stop_of.append(Stop("job", job.id))
            via[job.id] = (p, d)
            allowed[p] = allowed[d] = eligible
    n_nodes = len(locs)
    secs = [[0] * n_nodes for _ in range(n_nodes)]
    for i in range(n_nodes):
        row = secs[i]
        for j in range(n_nodes):
            if i != j:
                row[j] = math.ceil(travel.travel(locs[i], locs[j])[1] * 60)
    transit = [[secs[i][j] + service[i] for j in range(n_nodes)] for i in range(n_nodes)]

    manager = pywrapcp.RoutingIndexManager(n_nodes, nv, list(range(nv)), list(range(nv, 2 * nv)))
    routing = pywrapcp.RoutingModel(manager)
    # Matrices are indexed by node; the routing model asks by index.
    to_idx = manager.NodeToIndex
    arc_cb = routing.RegisterTransitMatrix([[s * int(_COST_SCALE * w.travel) for s in row] for row in secs])
    routing.SetArcCostEvaluatorOfAllVehicles(arc_cb)
    time_cb = routing.RegisterTransitMatrix(transit)
    day = int(max(max(t.shift[1] + t.max_overtime_min for t in techs), max(j.window[1] for j in problem.jobs)) * 60)
    day = max(day, 1) + 24 * 3600
    routing.AddDimension(time_cb, day, day, False, "time")
    tdim = routing.GetDimensionOrDie("time")
    tdim.SetGlobalSpanCostCoefficient(max(1, int(_COST_SCALE * w.balance)))
    for v, t in enumerate(techs):
        start = math.ceil(max(t.shift[0], problem.now) * 60)
        tdim.CumulVar(routing.Start(v)).SetRange(start, max(start, int(t.shift[1] * 60)))
        end_idx = routing.End(v)
        tdim.CumulVar(end_idx).SetMax(int((t.shift[1] + t.max_overtime_min) * 60))
        tdim.SetCumulVarSoftUpperBound(end_idx, int(t.shift[1] * 60), max(1, int(_COST_SCALE * w.overtime)))
        routing.AddVariableMinimizedByFinalizer(tdim.CumulVar(routing.Start(v)))
        routing.AddVariableMinimizedByFinalizer(tdim.CumulVar(end_idx))

    solver = routing.solver()
    for job in problem.jobs:
        job_nodes = [n for n in (direct.get(job.id), via.get(job.id, (None, None))[1]) if n is not None]
        for n in job_nodes:
            idx = to_idx(n)
            lo = math.ceil(max(job.window[0], problem.now) * 60)
            hi = int(job.window[1] * 60)
            if lo > hi:
                routing.VehicleVar(idx).SetValues([-1])
                continue
            tdim.CumulVar(idx).SetRange(lo, hi)
            coef = round(_COST_SCALE * w.lateness * job.weight)  # per second, scaled
            if coef > 0 and job.sla_due * 60 < hi:
                tdim.SetCumulVarSoftUpperBound(idx, max(0, int(job.sla_due * 60)), coef)
        penalty = int(unassigned_penalty(problem, job) * 60 * _COST_SCALE)
        if job_nodes:
            routing.AddDisjunction([to_idx(n) for n in job_nodes], penalty, 1)
        if job.id in via:
            p, d = via[job.id]
            pi, di = to_idx(p), to_idx(d)
            routing.AddDisjunction([pi], 0)
            routing.AddPickupAndDelivery(pi, di)
            solver.Add(routing.VehicleVar(pi) == routing.VehicleVar(di))
            solver.Add(tdim.CumulVar(pi) <= tdim.CumulVar(di))
    for n, vs in allowed.items():
        routing.VehicleVar(to_idx(n)).SetValues([-1, *vs])  # -1: the node may stay unvisited

    parts = sorted({p for j in problem.jobs for p in j.parts if j.id in direct})
    for part in parts:
        demand = [0] * n_nodes
        for job_id, n in direct.items():
            demand[n] = int(problem.job(job_id).parts.get(part, 0))
        cb = routing.RegisterUnaryTransitVector(demand)
        routing.AddDimensionWithVehicleCapacity(cb, 0, [int(t.van.get(part, 0)) for t in techs], True, f"part:{part}")

    # Frozen prefixes: the first stops of a route stay where they are.
    v_of = {t.id: v for v, t in enumerate(techs)}
    for tech_id, stops in frozen.items():
        if tech_id not in v_of:
            continue
        prev = routing.Start(v_of[tech_id])
        for n in _route_nodes(stops, direct, via):
            solver.Add(routing.NextVar(prev) == to_idx(n))
            prev = to_idx(n)

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.time_limit.FromMilliseconds(max(100, int(time_limit_s * 1000)))
    solution = None
    if initial is not None:
        routes = []
        for t in techs:
            nodes = _route_nodes(initial.routes.get(t.id, ()), direct, via)
            routes.append([to_idx(n) for n in nodes])
        routing.CloseModelWithParameters(params)
        start_assignment = routing.ReadAssignmentFromRoutes(routes, True)
        if start_assignment is not None:
            solution = routing.SolveFromAssignmentWithParameters(start_assignment, params)
    if solution is None:
        solution = routing.SolveWithParameters(params)
    if solution is None:
        plan = initial or Plan({t.id: () for t in problem.techs}, tuple(j.id for j in problem.jobs))
        return _checked(problem, travel, plan, t0, "no solution")

    out: dict[int, tuple[Stop, ...]] = {t.id: () for t in problem.techs}
    for v, t in enumerate(techs):
        idx = routing.Start(v)
        route: list[Stop] = []
        while not routing.IsEnd(idx):
            stop = stop_of[manager.IndexToNode(idx)]
            if stop is not None:
                route.append(stop)
            idx = solution.Value(routing.NextVar(idx))
        out[t.id] = tuple(route)
    served = {s.job_id for r in out.values() for s in r if s.kind == "job"}
    plan = Plan(out, tuple(j.id for j in problem.jobs if j.id not in served))
    return _checked(problem, travel, plan, t0, "solved")


def _route_nodes(stops: Sequence[Stop], direct: dict[int, int], via: dict[int, tuple[int, int]]) -> list[int]:
    """The model's nodes for a route of stops (a job after its pickup is the via-warehouse node)."""
    picked = {s.job_id for s in stops if s.kind == "pickup"}
    nodes: list[int] = []
    for s in stops:
        if s.kind == "pickup" or s.job_id in picked:
            n = via.get(s.job_id, (None, None))[0 if s.kind == "pickup" else 1]
        else:
            n = direct.get(s.job_id)
        if n is None:
            break  # the model has no such node (e.g. the job became ineligible): keep the prefix
        nodes.append(n)
    return nodes


def _checked(problem: Problem, travel: TravelModel, plan: Plan, t0: float, status: str) -> SolveResult:
    """Remove any job whose stop breaks a hard constraint (the judge is :func:`check_plan`)."""
    repairs = 0
    while True:
        res = check_plan(problem, travel, plan)
        bad = next((tid for tid, r in res.routes.items() if not r.feasible), None)
        if bad is None:
            return SolveResult(plan, time.perf_counter() - t0, repairs, status)
        stops = plan.routes[bad]
        victim = stops[-1].job_id  # drop from the end: earlier stops keep their times
        plan = Plan(plan.without(victim).routes, (*plan.unassigned, victim))
        repairs += 1
