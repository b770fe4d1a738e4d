"""The dispatch optimizer, pure: no database. :mod:`ticketing.planning` loads and stores.

* :mod:`.model` — jobs, technicians, warehouses, stops, plans (minutes from midnight of the day);
* :mod:`.routes` — the judge: simulate a route, check hard constraints, cost a plan;
* :mod:`.insertion` — cheapest insertion of one new ticket, emergency bumping, the greedy baseline;
* :mod:`.engine` — OR-Tools over the whole day (freeze prefixes, warm start);
* :mod:`.pyvrp_day` — the same day as a PyVRP model (the measured alternative; docs/dispatch.md);
* :mod:`.explain` — runner-up, cost difference, deciding and blocking constraints;
* :mod:`.solomon`, :mod:`.synthetic` — bench instances.
"""

from ticketing.optimizer.engine import SolveResult, solve
from ticketing.optimizer.explain import Explanation, explain_job, explain_plan
from ticketing.optimizer.insertion import (
    Insertion,
    TechOption,
    greedy_nearest,
    insert_job,
    insert_with_bump,
    tech_options,
)
from ticketing.optimizer.model import Job, Plan, Problem, Stop, Tech, Warehouse, Weights
from ticketing.optimizer.routes import CachedTravel, PlanResult, RouteResult, check_plan, simulate, tech_blockers

__all__ = [
    "CachedTravel",
    "Explanation",
    "Insertion",
    "Job",
    "Plan",
    "PlanResult",
    "Problem",
    "RouteResult",
    "SolveResult",
    "Stop",
    "Tech",
    "TechOption",
    "Warehouse",
    "Weights",
    "check_plan",
    "explain_job",
    "explain_plan",
    "greedy_nearest",
    "insert_job",
    "insert_with_bump",
    "simulate",
    "solve",
    "tech_blockers",
    "tech_options",
]
