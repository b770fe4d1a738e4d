"""Scoring a rule against known incidents: per reading and per incident, from incident windows or per-row labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rules.backtest import BacktestError, Episode, load_labels
from rules.scoring import Incident, incidents_from_labels, point_scores, pool, score

# (alarmed per reading at t = 0..9, incidents) → (tp, fp, fn, tn, precision, recall, f1, false-alarm, missed-alarm)
POINT_CASES = [
    (
        [0, 0, 1, 1, 0, 0, 1, 0, 0, 0],
        [Incident(2, 4), Incident(8, 9)],
        (2, 1, 3, 4, 0.6667, 0.4, 0.5, 0.2, 0.6),
    ),
    ([0] * 10, [Incident(3, 3)], (0, 0, 1, 9, None, 0.0, 0.0, 0.0, 1.0)),
    ([1] * 10, [], (0, 10, 0, 0, 0.0, None, 0.0, 1.0, None)),
    ([0] * 10, [], (0, 0, 0, 10, None, None, None, 0.0, None)),
    ([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], [Incident(0, 9)], (8, 0, 2, 0, 1.0, 0.8, 0.8889, None, 0.2)),
    # overlapping incidents count each reading once
    ([0, 1, 1, 0, 0, 0, 0, 0, 0, 0], [Incident(1, 5), Incident(2, 3)], (2, 0, 3, 5, 1.0, 0.4, 0.5714, 0.0, 0.6)),
]


@pytest.mark.parametrize(("alarmed", "incidents", "want"), POINT_CASES)
def test_point_wise_scores_follow_their_definitions(alarmed: list[int], incidents: list[Incident], want: tuple) -> None:
    """Per reading: precision TP/(TP+FP), recall TP/(TP+FN), F1 2TP/(2TP+FP+FN), false-alarm FP/(FP+TN), missed-alarm
    FN/(TP+FN); a ratio with nothing to count is None."""
    p = point_scores(np.arange(10, dtype=np.int64), np.array(alarmed, dtype=bool), incidents)
    got = (
        p.true_positives,
        p.false_positives,
        p.false_negatives,
        p.true_negatives,
        p.precision,
        p.recall,
        p.f1,
        p.false_alarm_rate,
        p.missed_alarm_rate,
    )
    assert got == want
    assert p.readings == 10 and p.anomalous == want[0] + want[2] and p.alarmed == sum(alarmed)


def test_event_wise_scores_give_delays_per_incident_and_per_label() -> None:
    """Each incident is detected by the first episode overlapping it; delays and recall are also given per label."""
    eps = [Episode(12, 20, 12, "major", None), Episode(40, 44, 40, "major", None), Episode(95, None, 95, "major", None)]
    incs = [Incident(10, 30, "step"), Incident(50, 60, "step"), Incident(70, 80, "drift"), Incident(90, 99, "drift")]
    sc = score(eps, incs, 0, 100)
    assert (sc.incidents, sc.detected, sc.true_episodes, sc.false_episodes) == (4, 2, 2, 1)
    assert (sc.mean_detection_delay_s, sc.median_detection_delay_s, sc.max_detection_delay_s) == (0.0035, 0.0035, 0.005)
    assert {k: (v.incidents, v.detected, v.recall, v.mean_detection_delay_s) for k, v in sc.by_label.items()} == {
        "step": (2, 1, 0.5, 0.002),
        "drift": (2, 1, 0.5, 0.005),
    }
    assert sc.points is None  # no per-reading states given


def test_score_includes_point_wise_results_when_given_the_readings() -> None:
    """Given each judged reading's time and alarm state, the score carries the per-reading view beside the events."""
    ts = np.arange(0, 100, 10, dtype=np.int64)
    alarmed = (ts >= 20) & (ts <= 40)
    sc = score([Episode(20, 50, 20, "major", None)], [Incident(30, 60)], 0, 100, ts=ts, alarmed=alarmed)
    assert sc.points is not None
    assert (sc.points.true_positives, sc.points.false_positives, sc.points.false_negatives) == (2, 1, 2)
    assert sc.recall == 1.0 and sc.mean_detection_delay_s == 0.0


def test_pooled_scores_equal_the_score_of_the_windows_side_by_side() -> None:
    """Pooling two devices' scores gives what one score over both windows, end to end, gives."""

    def ep(a: int, b: int) -> Episode:
        return Episode(a, b, a, "major", None)

    ts = np.arange(0, 100, 5, dtype=np.int64)
    a_eps, a_incs = [ep(10, 20), ep(60, 65)], [Incident(12, 30, "step"), Incident(80, 90, "drift")]
    b_eps, b_incs = [ep(15, 40)], [Incident(5, 25, "step")]
    on_a = np.array([any(e.start_ms <= t < e.end_ms for e in a_eps) for t in ts])
    on_b = np.array([any(e.start_ms <= t < e.end_ms for e in b_eps) for t in ts])
    a = score(a_eps, a_incs, 0, 100, ts=ts, alarmed=on_a)
    b = score(b_eps, b_incs, 0, 100, ts=ts, alarmed=on_b)
    shifted_eps = [ep(e.start_ms + 100, e.end_ms + 100) for e in b_eps]  # type: ignore[operator]
    shifted_incs = [Incident(i.start_ms + 100, i.end_ms + 100, i.label) for i in b_incs]
    both = score(
        a_eps + shifted_eps,
        a_incs + shifted_incs,
        0,
        200,
        ts=np.concatenate([ts, ts + 100]),
        alarmed=np.concatenate([on_a, on_b]),
    )
    assert pool([a, b]) == both
    assert (both.incidents, both.detected, both.by_label["step"].detected, both.points.readings) == (3, 2, 2, 40)


@pytest.mark.parametrize(
    ("labels", "want"),
    [
        (
            [None, "step", "step", None, "drift", "drift", "spike", None],
            [(1, 2, "step"), (4, 5, "drift"), (6, 6, "spike")],
        ),
        (["", "", "", None], [(0, 2, "")]),
        ([None, None, None], []),
    ],
)
def test_per_row_labels_become_incident_windows(labels: list[str | None], want: list[tuple]) -> None:
    """Each run of consecutive rows with one label (None: normal) is one incident from its first to its last row."""
    got = incidents_from_labels(list(range(len(labels))), labels)
    assert [(i.start_ms, i.end_ms, i.label) for i in got] == want


def test_labels_files_as_windows_or_per_row(tmp_path: Path) -> None:
    """A labels file is incident windows (start, end) or per-row labels (time, 0/1 or a name), any separator."""
    windows = tmp_path / "w.csv"
    windows.write_text("start,end,device,label\n0,10,pump-1,leak\n20,30,pump-2,\n")
    assert load_labels(windows, "pump-1") == [Incident(0, 10, "leak")]
    rows = tmp_path / "r.csv"
    rows.write_text(
        "datetime;Temperature;anomaly;changepoint\n"
        "2020-03-09 10:14:33;70.1;0.0;0.0\n"
        "2020-03-09 10:14:34;70.2;1.0;1.0\n"
        "2020-03-09 10:14:35;75.0;1.0;0.0\n"
        "2020-03-09 10:14:36;70.0;0.0;0.0\n"
    )
    t = 1583748874000  # 2020-03-09T10:14:34Z
    assert load_labels(rows) == [Incident(t, t + 1000, "")]
    kinds = tmp_path / "k.csv"
    kinds.write_text("time,label\n1000,normal\n2000,stuck\n3000,stuck\n4000,\n5000,drift\n")
    assert load_labels(kinds) == [Incident(2000, 3000, "stuck"), Incident(5000, 5000, "drift")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when,what\n1,2\n", "'start' and 'end' columns, or a time column and a label column"),
        ("start,end\n5,1\n", "line 2: end is before start"),
        ("time,anomaly\nyesterday,1\n", "line 2"),
    ],
)
def test_unusable_labels_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    """A labels file that cannot be read names the line or the columns it needs."""
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(BacktestError, match=message):
        load_labels(path)
