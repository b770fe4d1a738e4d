"""The ``residual`` anomaly model (the default) on simulated equipment: each feature regressed on the other tags'
features and scored by its residual, so a set point the training window never saw does not alarm while a broken
correlation between tags does — where models of distance from the training rows (``pca``, ``knn``) do the
opposite. Pure: no database."""

from __future__ import annotations

import numpy as np
import pytest

from rules.anomaly import ModelSpec, Segment, _Residual, feature_owners, score, train
from rules.model import DEFAULT_FEATURES, DEFAULT_MODELS
from simulators.scenarios import EQUIPMENT, FaultPlan, Operation, labelled_run

DAY = 86_400
TARGET = 0.01
CHILLER = EQUIPMENT["chiller"][1]
#: The earlier defaults, the comparison: PCA (T² + Q) on each tag's reading and spread.
OLD = ModelSpec(CHILLER, TARGET, ("pca",), ("level", "spread"))


def _arrays(run: object) -> tuple[np.ndarray, np.ndarray]:
    return np.array(run.ts_ms, dtype=np.int64), np.array(run.rows, dtype=float)  # type: ignore[attr-defined]


def _far(model: object, ts: np.ndarray, x: np.ndarray) -> float:
    s = score(model, ts, x).scores  # type: ignore[arg-type]
    return float(np.mean(s[np.isfinite(s)] > 1.0))


@pytest.fixture(scope="module")
def chiller() -> tuple[np.ndarray, np.ndarray]:
    """Six fault-free days of chiller seed 4 at a reading a minute: set point 7 and 6.5 °C in the first three days,
    8 °C (never seen before) in the last three; loads change every 6-18 h throughout."""
    points = Operation(4).schedule("chiller", 6 * DAY).setpoints
    assert {v for t, v in points if t < 3 * DAY} == {7.0, 6.5}
    assert 8.0 in {v for t, v in points if t >= 3 * DAY}
    return _arrays(labelled_run("chiller", 4, seconds=6 * DAY, step_s=60))


def test_the_rule_defaults_are_the_residual_model_over_level_time_of_day_mean_and_spread() -> None:
    """What a user gets without writing ``models`` or ``features``, and what :class:`ModelSpec` defaults to."""
    assert DEFAULT_MODELS == ModelSpec(("a", "b")).kinds == ("residual",)
    assert DEFAULT_FEATURES == ModelSpec(("a", "b")).features == ("level", "time_of_day", "mean", "spread")


def test_a_set_point_the_window_never_saw_does_not_alarm(chiller: tuple[np.ndarray, np.ndarray]) -> None:
    """Trained on three days at 7 and 6.5 °C, tested on three days that reach 8 °C: the residual model stays within
    1.5× its target on the unseen days, while PCA on the same window alarms on more than 10 % of them."""
    ts, x = chiller
    cut = int(np.searchsorted(ts, ts[0] + 3 * DAY * 1000))
    model = train([Segment(ts[:cut], x[:cut])], ModelSpec(CHILLER, TARGET))
    assert model.kind == "residual" and model.card["components"] is None
    assert _far(model, ts[cut:], x[cut:]) <= 1.5 * TARGET
    old = train([Segment(ts[:cut], x[:cut])], OLD)
    assert _far(old, ts[cut:], x[cut:]) > 0.1


@pytest.mark.parametrize("tag", ["chw_return_temp", "compressor_current"])
def test_a_broken_correlation_between_tags_is_found(chiller: tuple[np.ndarray, np.ndarray], tag: str) -> None:
    """A tag that moves against the process (``decouple``: it mirrors its true changes, so it stays in its usual
    range) for 6 h: the residual model flags over 90 % of its readings, PCA under 20 %."""
    ts, x = chiller
    cut = int(np.searchsorted(ts, ts[0] + 3 * DAY * 1000))
    run = labelled_run(
        "chiller", 4, seconds=4 * DAY, step_s=60, faults=[FaultPlan("decouple", tag, 3 * DAY + 3600, 6 * 3600)]
    )
    fts, fx = _arrays(run)
    faulty = np.array([lb == "decouple" for lb in run.labels])
    assert faulty.sum() > 300
    for spec, low, high in ((ModelSpec(CHILLER, TARGET), 0.9, 1.0), (OLD, 0.0, 0.2)):
        model = train([Segment(ts[:cut], x[:cut])], spec)
        flagged = score(model, fts, fx).scores > 1.0
        assert low <= flagged[faulty].mean() <= high, (spec.kinds, flagged[faulty].mean())


def test_a_feature_is_never_predicted_from_its_own_tag() -> None:
    """Tag ``a``'s level and mean are the same column twice, ``b`` is unrelated: ``a.level`` is regressed on ``b``
    only (had it been regressed on ``a.mean`` its residual would be zero), so a step of 6σ on ``a`` shows in full."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=2000), rng.normal(size=2000)
    z = np.column_stack([a, a, b])
    owners = feature_owners(["a.level", "a.mean", "b.level"])
    assert owners.tolist() == [0, 0, 1]
    det = _Residual(z, owners)
    probe = np.array([[6.0, 6.0, 0.0]])
    assert det.residuals(probe)[0, :2] == pytest.approx([6.0, 6.0], rel=0.05)
    assert det.score(z).mean() < 1.5  # the largest of three |z| on normal rows


def test_a_single_tag_is_scored_by_its_largest_standardised_feature() -> None:
    """No other tag to regress on: each feature is compared with its fit mean, in units of its spread."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3000, 2)) * [1.0, 3.0] + [5.0, -2.0]
    det = _Residual(z, np.zeros(2, dtype=np.int64))
    probe = np.array([[z[:, 0].mean() + 4 * z[:, 0].std(), z[:, 1].mean()]])
    assert det.score(probe)[0] == pytest.approx(4.0, rel=1e-6)


def test_the_default_window_is_seven_intervals_and_jittered_sampling_stays_ready() -> None:
    """Readings every 60 s ± 3 s: the default window is 7 typical intervals, and every row after the first window is
    scored — a window of 5 intervals would sit on the readiness limit (4 intervals = 80 %) and leave rows warming
    up at random."""
    from rules.features import fit_feature_map

    rng = np.random.default_rng(2)
    ts = 1_700_000_000_000 + np.cumsum(rng.integers(57_000, 63_001, size=3000)).astype(np.int64)
    x = rng.normal(size=(3000, 2))
    fmap = fit_feature_map(("a", "b"), ("level", "spread"), [(ts, x)])
    assert fmap.window_s == pytest.approx(7 * 60, rel=0.01)
    _, ready = fmap.transform(ts, x)
    assert ready[10:].all()
    five = fit_feature_map(("a", "b"), ("level", "spread"), [(ts, x)], window_s=5 * 60)
    assert not five.transform(ts, x)[1][10:].all()
