"""Seeded synthetic field-service days for the bench and the property tests. Pure."""

from __future__ import annotations

import random

from ticketing.optimizer.model import Job, Problem, Tech, Warehouse, Weights

SEGMENTS = (("platinum", 4.0, 120), ("gold", 2.0, 240), ("standard", 1.0, 480))
SKILLS = ("pump", "compressor", "electrical", "hvac")
PARTS = ("bearing", "seal", "filter", "relay", "belt", "impeller")
TOOLS = ("crane", "thermal_camera", "vibration_kit")


def synthetic_day(
    n_jobs: int = 300,
    n_techs: int = 40,
    *,
    seed: int = 1,
    center: tuple[float, float] = (40.42, -3.70),
    radius_deg: float = 0.25,
    n_warehouses: int = 3,
    weights: Weights | None = None,
) -> Problem:
    """A day around ``center`` (±``radius_deg``): 08:00–17:00 shifts, skills with levels, tools,
    van stock, warehouses, client segments with SLA targets, a quarter of jobs with a site window."""
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
    return Problem(tuple(jobs), tuple(techs), warehouses, weights or Weights())
