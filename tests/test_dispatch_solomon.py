"""Solomon VRPTW: the parser reads a hand-made instance, rejects bad ones, and both engines solve it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ticketing.optimizer.solomon import SolomonFormatError, check, dumps, generate, parse, solve_vrptw

TINY = """TINY3

VEHICLE
NUMBER     CAPACITY
  2         20

CUSTOMER
CUST NO.  XCOORD.   YCOORD.    DEMAND   READY TIME  DUE DATE   SERVICE   TIME

    0      0         0          0          0       100          0
    1      3         4         10          0        50          5
    2      -3        4         10         20        60          5
    3      0        -5         15          0       100          5
"""


def test_parse_hand_made_instance() -> None:
    """Vehicles, capacity and every customer column are read; distances are Euclidean."""
    inst = parse(TINY)
    assert (inst.name, inst.vehicles, inst.capacity) == ("TINY3", 2, 20)
    assert len(inst.customers) == 4
    c2 = inst.customers[2]
    assert (c2.x, c2.y, c2.demand, c2.ready, c2.due, c2.service) == (-3, 4, 10, 20, 60, 5)
    assert inst.dist(0, 1) == 5.0
    assert parse(dumps(inst)) == inst


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("X\nCUSTOMER\n0 0 0 0 0 1 0\n", "VEHICLE"),
        (TINY.replace("    2      -3        4         10         20        60          5", "    2 -3 4"), "expected 7"),
        (TINY.replace("    0      0         0          0", "    5      0         0          0"), "depot"),
    ],
)
def test_parse_rejects_bad_text(text: str, message: str) -> None:
    """A broken file is refused with a message naming what is wrong."""
    with pytest.raises(SolomonFormatError, match=message):
        parse(text)


@pytest.mark.parametrize("engine", ["ortools", "pyvrp"])
def test_engines_solve_tiny_optimally(engine: str) -> None:
    """Capacity forces two routes; the optimum is 0-1-2-0 plus 0-3-0 = 5+6+5 + 10 = 26."""
    inst = parse(TINY)
    res = solve_vrptw(inst, time_limit_s=0.5, engine=engine)
    assert res.feasible and check(inst, res.routes) == []
    assert res.vehicles == 2
    assert res.distance == pytest.approx(26.0)


def test_bench_vrptw_prints_one_json_line(tmp_path: Path) -> None:
    """bench/dispatch.py --vrptw FILE --json ends with distance and vehicles."""
    path = tmp_path / "gen.txt"
    path.write_text(dumps(generate(12, seed=2, vehicles=6)))
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "bench" / "dispatch.py"), "--vrptw", str(path), "--time-limit", "0.5", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert result["feasible"] is True and result["vehicles"] <= 6 and result["distance"] > 0
