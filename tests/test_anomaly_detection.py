"""What the default anomaly model finds on labelled simulator runs (pure: no database): sensor faults that
leave every level in range — a stuck transmitter — are caught through the spread group without diluting the
levels, and a rule's alarm holds through a fault instead of chattering on its threshold."""

from __future__ import annotations

import numpy as np
import pytest

from rules.anomaly import ModelSpec, Segment, feature_groups, score, train
from simulators.scenarios import EQUIPMENT, FaultPlan, labelled_run

DAY_S = 86_400
FAULT_S = 6 * 3600


def _run(equipment: str, seed: int, fault: FaultPlan | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Two fault-free days then one more (with ``fault`` in it): (ts_ms, rows, fault rows mask, first test row)."""
    run = labelled_run(equipment, seed, seconds=3 * DAY_S, step_s=60, faults=[fault] if fault else [])
    ts = np.array(run.ts_ms, dtype=np.int64)
    cut = int(np.searchsorted(ts, ts[0] + 2 * DAY_S * 1000 - 60_000))
    labelled = np.array([lb is not None for lb in run.labels])
    return ts, np.array(run.rows), labelled, cut


def test_feature_groups_keep_levels_together_and_each_windowed_kind_apart() -> None:
    """Levels, means and time-of-day residuals form one group; spread, slope and rate one group each."""
    names = ["a.level", "a.spread", "a.slope", "b.level", "b.spread", "b.slope", "b.mean"]
    groups = [list(g) for g in feature_groups(names)]
    assert groups == [[0, 3, 6], [1, 4], [2, 5]]
    assert [list(g) for g in feature_groups(["a.level", "b.level"])] == [[0, 1]]


@pytest.mark.parametrize("equipment", ["pump", "compressor"])
def test_a_stuck_sensor_among_several_tags_alarms_for_most_of_its_window(equipment: str) -> None:
    """With the default features a frozen transmitter on one of several tags is above the threshold for at least
    80 % of the readings it changed, while fault-free readings stay near the target rate."""
    tag = EQUIPMENT[equipment][1][0]
    fault = FaultPlan("stuck", tag, 2 * DAY_S + 4 * 3600, FAULT_S)
    ts, x, labelled, cut = _run(equipment, 2, fault)
    model = train([Segment(ts[:cut], x[:cut])], ModelSpec(EQUIPMENT[equipment][1], 0.01, seed=2))
    s = np.nan_to_num(score(model, ts[cut:], x[cut:]).scores, nan=0.0)
    on = s > 1.0
    fault_rows = labelled[cut:]
    assert on[fault_rows].mean() >= 0.8, on[fault_rows].mean()
    quiet = ~fault_rows & (ts[cut:] < fault.start_s * 1000 + ts[0] - 60_000)
    assert on[quiet].mean() <= 0.03


def test_an_anomaly_alarm_with_default_levels_holds_while_the_score_wavers_near_its_threshold() -> None:
    """Left without levels, an anomaly rule opens above 1.0 and clears only below ANOMALY_CLEAR (0.7), so a fault
    whose score wavers around the threshold is one alarm, not one per excursion."""
    from rules.backtest import episodes, replay
    from rules.compile import compile_rule
    from rules.model import ANOMALY_CLEAR, RuleSpec
    from rules.replay import History

    spec = RuleSpec.model_validate(
        {
            "name": "watch",
            "condition": {"kind": "anomaly", "tags": ["a", "b"], "training": {"last_days": 7}},
            "problem_code": "X",
        }
    )
    assert ANOMALY_CLEAR == 0.7
    s = np.array([0.5, 1.2, 0.9, 0.8, 1.1, 0.95, 0.75, 1.3, 0.6, 0.5])
    ts = 1_700_000_000_000 + np.arange(len(s), dtype=np.int64) * 60_000
    rep = replay(compile_rule(spec), History(ts, s, np.zeros(len(s), np.int16)))
    assert rep.rows.alarmed.tolist() == [False] + [True] * 7 + [False, False]
    assert len(episodes(rep.events)) == 1
