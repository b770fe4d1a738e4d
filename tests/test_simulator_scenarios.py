"""Labelled runs for judging anomaly detection: seeded physics under normal operating changes, faults at known
times, and every row labelled with the fault that changed it."""

from __future__ import annotations

import statistics

import pytest

from simulators.scenarios import EQUIPMENT, FAULT_KINDS, FaultPlan, Operation, labelled_run

DAY = 86_400
FAULT = {"step": {"magnitude": 5.0}, "drift": {"rate": 0.001}, "spike": {"probability": 0.3, "magnitude": 9.0}}


@pytest.mark.parametrize("equipment", list(EQUIPMENT))
def test_runs_repeat_with_their_seed_and_differ_between_seeds(equipment: str) -> None:
    """The same seed gives the same readings; another seed other readings; one row per step after the origin."""
    a, b, c = (labelled_run(equipment, s, seconds=6 * 3600, step_s=60) for s in (1, 1, 2))
    assert a.rows == b.rows and a.ts_ms == b.ts_ms and a.rows != c.rows
    assert len(a.rows) == 6 * 60 and a.ts_ms[1] - a.ts_ms[0] == 60_000 and a.labels == [None] * len(a.rows)
    assert all(len(r) == len(EQUIPMENT[equipment][1]) for r in a.rows)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_rows_are_labelled_where_the_fault_changed_the_reading(kind: str) -> None:
    """Inside its window a fault labels the rows it changed (a spike only its spikes), and touches no other tag."""
    plan = FaultPlan(kind, "flow", start_s=3600, duration_s=3600, sigma=2.0, **FAULT.get(kind, {}))
    clean = labelled_run("pump", 4, seconds=3 * 3600, step_s=60)
    faulty = labelled_run("pump", 4, seconds=3 * 3600, step_s=60, faults=[plan])
    col = EQUIPMENT["pump"][1].index("flow")
    for ts, c, f, label in zip(faulty.ts_ms, clean.rows, faulty.rows, faulty.labels, strict=True):
        inside = faulty.faults[0][2] <= ts < faulty.faults[0][3]
        assert [x for i, x in enumerate(f) if i != col] == [x for i, x in enumerate(c) if i != col]
        assert (label == kind) == (f[col] != c[col]) and (inside or label is None)
    labelled = faulty.labels.count(kind)
    assert (10 < labelled < 35) if kind == "spike" else (55 <= labelled <= 60)
    assert faulty.faults == [(kind, "flow", faulty.ts_ms[0] - 60_000 + 3_600_000, faulty.ts_ms[0] - 60_000 + 7_200_000)]


def test_normal_operation_moves_the_readings_and_can_be_turned_off() -> None:
    """Day/night, load and set-point changes move a chiller's readings by far more than its sensor noise; without
    them it only swings with its building-load cycle."""
    spread = {}
    for name, op in (("changing", Operation(3)), ("steady", Operation(3, False, False, False))):
        run = labelled_run("chiller", 3, seconds=4 * DAY, step_s=300, operation=op)
        cols = list(zip(*run.rows, strict=True))
        spread[name] = {tag: statistics.pstdev(c) for tag, c in zip(run.tags, cols, strict=True)}
    assert spread["changing"]["chw_supply_temp"] > 5 * spread["steady"]["chw_supply_temp"]  # set-point changes
    assert spread["changing"]["cond_pressure"] > 1.5 * spread["steady"]["cond_pressure"]  # condenser water by day


def test_a_fault_on_an_unknown_tag_or_kind_is_refused() -> None:
    """A fault names a tag the equipment has and a kind the fault layer knows."""
    with pytest.raises(ValueError, match="pump has no tag 'superheat'"):
        labelled_run("pump", 1, seconds=600, faults=[FaultPlan("stuck", "superheat", 0, 60)])
    with pytest.raises(ValueError, match="unknown fault 'melt'"):
        FaultPlan("melt", "flow", 0, 60)
