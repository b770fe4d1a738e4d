"""Seeded synthetic field-service days for the bench and the property tests. Pure."""

from __future__ import annotations

import random
from dataclasses import replace

from ticketing.optimizer.model import Job, Problem, Tech, Warehouse, Weights

SEGMENTS = (("platinum", 4.0, 120), ("gold", 2.0, 240), ("standard", 1.0, 480))
SKILLS = ("pump", "compressor", "electrical", "hvac")
PARTS = ("bearing", "seal", "filter", "relay", "belt", "impeller")
TOOLS = ("crane", "thermal_camera", "vibration_kit")
MODELS = ("C200", "P-300", "X9")


def synthetic_day(
    n_jobs: int = 300,
    n_techs: int = 40,
    *,
    seed: int = 1,
    center: tuple[float, float] = (40.42, -3.70),
    radius_deg: float = 0.25,
    n_warehouses: int = 3,
    weights: Weights | None = None,
    model_levels: bool = False,
) -> Problem:
    """A day around ``center`` (±``radius_deg``): 08:00–17:00 shifts, skills with levels, tools,
    van stock, warehouses, client segments with SLA targets, a quarter of jobs with a site window.

    ``model_levels`` adds equipment models: jobs on a model, and technicians with levels on some
    models that replace (often lower than) their general level. It draws from its own random
    stream, so the rest of the day is the same with or without it."""
    rnd = random.Random(seed)

    def point() -> tuple[float, float]:
        return (
            round(center[0] + rnd.uniform(-radius_deg, radius_deg), 5),
            round(center[1] + rnd.uniform(-radius_deg, radius_deg), 5),
        )

    techs = []
    for i in range(n_techs):
        skills = {s: rnd.randint(1, 5) for s in rnd.sample(SKILLS, rnd.randint(1, 3))}
        start = rnd.choice((420.0, 480.0, 540.0))
        techs.append(
            Tech(
                id=i + 1,
                name=f"tech-{i + 1:03d}",
                start=point(),
                shift=(start, start + 540.0),
                max_overtime_min=rnd.choice((0.0, 30.0, 60.0)),
                skills=skills,
                tools=frozenset(rnd.sample(TOOLS, rnd.randint(0, 2))),
                van={p: rnd.randint(0, 3) for p in rnd.sample(PARTS, 3)},
                available=rnd.random() > 0.05,
            )
        )
    warehouses = tuple(
        Warehouse(id=w + 1, name=f"wh-{w + 1}", location=point(), stock={p: 50 for p in PARTS[: 4 + w % 3]})
        for w in range(n_warehouses)
    )
    jobs = []
    for j in range(n_jobs):
        _seg, weight, sla = rnd.choice(SEGMENTS)
        priority = rnd.choices((1, 2, 3, 4), (1, 3, 4, 2))[0]
        created = rnd.uniform(360.0, 720.0)
        window = (0.0, 2880.0)
        if rnd.random() < 0.25:
            open_at = rnd.choice((480.0, 600.0, 780.0))
            window = (open_at, open_at + 180.0)
        jobs.append(
            Job(
                id=1000 + j,
                location=point(),
                service_min=float(rnd.choice((20, 30, 30, 45, 60))),
                skill=rnd.choice(SKILLS) if rnd.random() < 0.9 else None,
                level=rnd.choices((1, 2, 3, 4), (4, 3, 2, 1))[0],
                parts={rnd.choice(PARTS): 1} if rnd.random() < 0.35 else {},
                tools=frozenset([rnd.choice(TOOLS)]) if rnd.random() < 0.1 else frozenset(),
                window=window,
                sla_due=created + sla * (0.5 if priority == 1 else 1.0),
                weight=weight,
                priority=priority,
            )
        )
    if model_levels:
        jobs, techs = _with_models(jobs, techs, random.Random(seed * 7919 + 17))
    return Problem(tuple(jobs), tuple(techs), warehouses, weights or Weights())


def _with_models(jobs: list[Job], techs: list[Tech], rnd: random.Random) -> tuple[list[Job], list[Tech]]:
    """Put most jobs on an equipment model and give technicians per-model levels for their skills."""
    new_techs = []
    for t in techs:
        skills = dict(t.skills)
        for skill in list(t.skills):
            for model in MODELS:
                if rnd.random() < 0.4:
                    skills[f"{skill}@{model}"] = rnd.randint(1, 5)
        new_techs.append(replace(t, skills=skills))
    new_jobs = [replace(j, model=rnd.choice(MODELS)) if rnd.random() < 0.7 else j for j in jobs]
    return new_jobs, new_techs
