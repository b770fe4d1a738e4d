"""The VRPTW bench on real Solomon instances (bench/data): parsed from Solomon text and VRPLIB,
solved feasibly, the distance recomputed here from the routes, near the published best."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ticketing.optimizer.solomon import Instance, load, solve_vrptw, truncated_distance

DATA = Path(__file__).resolve().parent.parent / "bench" / "data"
#: Published best distances (see bench/data/README.md for the source and the objective).
BEST = {"C101.txt": 828.94, "R201.txt": 1143.2, "RC208.vrp": 776.1}


def _own_check(inst: Instance, routes: list[list[int]]) -> float:
    """Independent of the solver module: every customer once, capacity, windows; returns the distance."""
    seen = sorted(c for r in routes for c in r)
    assert seen == list(range(1, len(inst.customers)))
    c = inst.customers
    total = 0.0
    for r in routes:
        assert sum(c[i].demand for i in r) <= inst.capacity
        t, here = c[0].ready, 0
        for i in [*r, 0]:
            leg = math.hypot(c[here].x - c[i].x, c[here].y - c[i].y)
            total += leg
            t = max(t + c[here].service + leg, c[i].ready)
            assert t <= c[i].due + 1e-6, f"customer {i} served at {t:.2f} after its due date {c[i].due}"
            here = i
    assert len([r for r in routes if r]) <= inst.vehicles
    return total


@pytest.mark.parametrize("name", sorted(BEST))
def test_real_instance_is_solved_feasibly_near_best_known(name: str) -> None:
    """At 2 s the default engine's routes pass our own check and stay within 10% of the best known."""
    inst = load(DATA / name)
    assert len(inst.customers) == 101
    res = solve_vrptw(inst, 2.0, "pyvrp")
    distance = _own_check(inst, res.routes)
    assert distance == pytest.approx(res.distance, rel=1e-9)
    assert distance <= BEST[name] * 1.10, f"{name}: {distance:.2f} vs best known {BEST[name]}"
    assert distance >= BEST[name] * 0.999  # nobody beats the literature by accident: the distances are right


def test_bench_cli_prints_one_json_line_with_the_gap() -> None:
    """`bench/dispatch.py --vrptw` on a real file ends with one JSON object: distance, vehicles, gap."""
    out = subprocess.run(
        [
            sys.executable,
            "bench/dispatch.py",
            "--vrptw",
            str(DATA / "C101.txt"),
            "--time-limit",
            "1",
            "--best-known",
            "828.94",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=DATA.parent.parent,
        timeout=120,
    )
    last = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert (last["instance"], last["engine"], last["feasible"]) == ("C101", "pyvrp", True)
    assert last["vehicles"] >= 10 and 0 <= last["gap_pct"] < 10


def test_two_parallel_searches_return_one_feasible_plan_within_the_wall_clock() -> None:
    """--workers 2 (seeds 1 and 2 in forked processes): one checked plan, and the call keeps to the limit."""
    inst = load(DATA / "RC208.vrp")
    r = solve_vrptw(inst, 3.0, "pyvrp", seed=1, workers=2)
    assert r.feasible
    assert _own_check(inst, r.routes) == pytest.approx(r.distance)
    assert r.solve_s < 3.0 + 1.0  # fork + model build are inside the budget; 1 s slack for a loaded CI box


def test_truncated_distance_truncates_every_arc_to_one_decimal() -> None:
    """The convention of the exact methods' optima: each arc floor(d * 10) / 10, summed."""
    c = load(DATA / "C101.txt")
    routes = [[1, 2]]
    arcs = [(0, 1), (1, 2), (2, 0)]
    expected = sum(math.floor(c.dist(a, b) * 10) / 10 for a, b in arcs)
    assert truncated_distance(c, routes) == pytest.approx(expected)
    assert truncated_distance(c, routes) <= sum(c.dist(a, b) for a, b in arcs)
    assert any(c.dist(a, b) * 10 != math.floor(c.dist(a, b) * 10) for a, b in arcs)  # the case is not trivial
