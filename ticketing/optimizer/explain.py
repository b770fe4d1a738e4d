"""Why each job went where it did, and why others went nowhere. Pure.

For an assigned job the chosen technician's *marginal cost* (plan cost with the job minus without
it) is compared with every other technician's cheapest feasible insertion of the job into their
own route (:func:`tech_options`). The runner-up is the cheapest of those; the deciding constraints
are the blockers of every technician who would have been cheaper than the runner-up but cannot
take the job. For an unassigned job every technician's blockers are listed, grouped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ticketing.geo import LatLon, TravelModel
from ticketing.optimizer.insertion import TechOption, tech_options
from ticketing.optimizer.model import Plan, Problem
from ticketing.optimizer.routes import simulate


@dataclass(frozen=True, slots=True)
class Explanation:
    job_id: int
    tech_id: int | None
    cost: float | None  # the chosen technician's marginal cost
    runner_up_id: int | None = None
    runner_up_name: str | None = None
    runner_up_cost: float | None = None
    deciding: tuple[str, ...] = ()  # constraints that ruled out otherwise-cheaper technicians
    blockers: tuple[str, ...] = ()  # for an unassigned job: what blocks each technician
    options: tuple[TechOption, ...] = field(default=(), repr=False)

    @property
    def cost_difference(self) -> float | None:
        if self.cost is None or self.runner_up_cost is None:
            return None
        return self.runner_up_cost - self.cost

    def text(self) -> str:
        """One line for a dispatcher."""
        if self.tech_id is None:
            return "unassigned: " + "; ".join(self.blockers or ("no technician on record",))
        msg = f"cost {self.cost:.1f}"
        if self.runner_up_name is not None:
            msg += f"; runner-up {self.runner_up_name} {self.cost_difference:+.1f}"
        else:
            msg += "; no other technician could take it"
        if self.deciding:
            msg += "; ruled out: " + "; ".join(self.deciding)
        return msg


def explain_job(problem: Problem, travel: TravelModel, plan: Plan, job_id: int) -> Explanation:
    job = problem.job(job_id)
    tech_id = plan.tech_of(job_id)
    options = tech_options(problem, travel, plan, job)
    if tech_id is None:
        reasons = Counter(
            b.replace(f"{o.tech_name}'s ", "").replace(f"{o.tech_name} ", "", 1) for o in options for b in o.blockers
        )
        return Explanation(
            job_id,
            None,
            None,
            blockers=tuple(f"{r} ({n} technician{'s' * (n > 1)})" for r, n in reasons.most_common()),
            options=tuple(options),
        )
    tech = problem.tech(tech_id)
    with_job = simulate(problem, travel, tech, plan.routes[tech_id])
    without = simulate(problem, travel, tech, plan.without(job_id).routes[tech_id])
    cost = with_job.cost - without.cost
    others = [o for o in options if o.tech_id != tech_id]
    runner = next((o for o in others if o.feasible), None)
    bar = runner.delta_cost if runner is not None else float("inf")
    # Technicians who might have done it cheaper: nearer than the runner-up but blocked.
    runner_km = travel.travel(_pos(problem, runner.tech_id), job.location)[0] if runner else float("inf")
    deciding = tuple(
        b
        for o in others
        if not o.feasible and travel.travel(_pos(problem, o.tech_id), job.location)[0] < runner_km
        for b in o.blockers
    )[:5]
    return Explanation(
        job_id,
        tech_id,
        cost,
        runner_up_id=runner.tech_id if runner else None,
        runner_up_name=runner.tech_name if runner else None,
        runner_up_cost=bar if runner else None,
        deciding=deciding,
        options=tuple(options),
    )


def explain_plan(problem: Problem, travel: TravelModel, plan: Plan) -> dict[int, Explanation]:
    return {j.id: explain_job(problem, travel, plan, j.id) for j in problem.jobs}


def _pos(problem: Problem, tech_id: int) -> LatLon:
    return problem.tech(tech_id).start
