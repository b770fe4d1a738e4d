"""Explanations: the runner-up really is second best, and unassigned jobs name their blockers."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticketing.geo import GreatCircleTravel
from ticketing.optimizer import (
    CachedTravel,
    Explanation,
    Job,
    Plan,
    Problem,
    Tech,
    explain_job,
    insert_job,
    simulate,
)
from ticketing.optimizer.synthetic import synthetic_day

TRAVEL = CachedTravel(GreatCircleTravel())


def _inserted(problem: Problem) -> Plan:
    plan = Plan({t.id: () for t in problem.techs})
    for job in problem.jobs:
        plan = insert_job(problem, TRAVEL, plan, job).plan
    return plan


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 5000), st.integers(2, 6), st.integers(3, 20))
def test_runner_up_is_the_cheapest_other_feasible_technician(seed: int, n_techs: int, n_jobs: int) -> None:
    """Brute force: inserting the job into every other technician's route costs no less than the runner-up."""
    problem = synthetic_day(n_jobs, n_techs, seed=seed, radius_deg=0.1)
    plan = _inserted(problem)
    for job in problem.jobs:
        exp = explain_job(problem, TRAVEL, plan, job.id)
        if exp.tech_id is None or exp.runner_up_id is None:
            continue
        base = plan.without(job.id)
        for opt in exp.options:
            if opt.tech_id in (exp.tech_id, exp.runner_up_id) or not opt.feasible:
                continue
            tech = problem.tech(opt.tech_id)
            # Independently recompute that technician's insertion cost from the route it produced.
            cost = (
                simulate(problem, TRAVEL, tech, opt.stops).cost
                - simulate(problem, TRAVEL, tech, base.routes[tech.id]).cost
            )
            assert cost >= exp.runner_up_cost - 1e-6
        assert exp.cost_difference is not None


def test_explanation_names_runner_up_and_what_ruled_out_a_nearer_technician() -> None:
    """Ben is nearest but lacks the skill; Ana gets the job and Carla, farther, is the runner-up."""
    site = (40.40, -3.70)
    techs = (
        Tech(1, "Ana Ruiz", (40.45, -3.70), skills={"pump": 2}),
        Tech(2, "Ben Ode", (40.401, -3.70), skills={"hvac": 3}),
        Tech(3, "Carla Gil", (40.60, -3.70), skills={"pump": 3}),
    )
    problem = Problem((Job(1, site, skill="pump", level=2),), techs)
    ins = insert_job(problem, TRAVEL, Plan({t.id: () for t in techs}), problem.jobs[0])
    exp = explain_job(problem, TRAVEL, ins.plan, 1)
    assert exp.tech_id == 1
    assert exp.runner_up_name == "Carla Gil"
    assert exp.cost_difference is not None and exp.cost_difference > 0
    assert any("Ben Ode lacks skill pump level 2" in d for d in exp.deciding)
    assert "runner-up Carla Gil" in exp.text()


def test_unassigned_job_lists_its_blockers() -> None:
    """A job nobody can take says why for every technician: skill, parts, shift."""
    site = (40.40, -3.70)
    techs = (
        Tech(1, "Ana", (40.41, -3.70), skills={"pump": 1}),
        Tech(2, "Ben", (40.41, -3.70), skills={"pump": 5}, shift=(480, 490), max_overtime_min=0),
        Tech(3, "Cy", (40.41, -3.70), skills={"pump": 5}, available=False),
    )
    job = Job(1, site, skill="pump", level=3, service_min=60, parts={"impeller": 1})
    problem = Problem((job,), techs)
    exp = explain_job(problem, TRAVEL, Plan({t.id: () for t in techs}, (1,)), 1)
    assert exp.tech_id is None
    text = exp.text()
    assert "lacks skill pump level 3 (has 1)" in text
    assert "impeller×1 neither in van nor in any warehouse" in text
    assert "is not available" in text


def test_explanation_names_the_model_level_that_ruled_out_a_nearer_technician() -> None:
    """Ben is nearest and level 4 on pumps, but level 1 on the C200 the job is on: the explanation says so."""
    site = (40.40, -3.70)
    techs = (
        Tech(1, "Ana Ruiz", (40.45, -3.70), skills={"pump": 2}),
        Tech(2, "Ben Ode", (40.401, -3.70), skills={"pump": 4, "pump@C200": 1}),
        Tech(3, "Carla Gil", (40.60, -3.70), skills={"pump": 1, "pump@C200": 3}),
    )
    problem = Problem((Job(1, site, skill="pump", level=2, model="C200"),), techs)
    ins = insert_job(problem, TRAVEL, Plan({t.id: () for t in techs}), problem.jobs[0])
    exp = explain_job(problem, TRAVEL, ins.plan, 1)
    assert (exp.tech_id, exp.runner_up_name) == (1, "Carla Gil")  # Carla's C200 level 3 beats her general 1
    assert any("Ben Ode lacks skill pump level 2 on C200: level 1 on C200 < required 2" in d for d in exp.deciding)
    assert "level 1 on C200 < required 2" in exp.text()


def test_a_cheaper_runner_up_prints_a_plain_minus_sign() -> None:
    """A runner-up cheaper alone than the chosen technician reads "-293.6", never "+-293.6"."""
    from ticketing.planning import placement_reason

    exp = Explanation(1, 7, cost=300.0, runner_up_id=8, runner_up_name="Bo", runner_up_cost=6.4)
    dearer = Explanation(1, 7, cost=6.4, runner_up_id=8, runner_up_name="Bo", runner_up_cost=300.0)
    assert "runner-up Bo -293.6" in exp.text() and "+-" not in exp.text()
    assert "runner-up Bo (-293.6)" in placement_reason(exp, 1.0, 2.0)
    assert "runner-up Bo (+293.6)" in placement_reason(dearer, 1.0, 2.0)
