"""Anomaly models on simulated pump physics: trained on fault-free data they detect bearing wear and stay
under their false-alarm target on fault-free data they have not seen."""

from __future__ import annotations

import numpy as np
import pytest

from rules.anomaly import AnomalyTrainingError, train
from simulators.pump import MEASUREMENTS, PumpModel

TARGET = 0.01


def run(seed: int, seconds: int, fault_at: int | None = None, rate: float = 0.05) -> np.ndarray:
    """Readings every 5 s (rows × MEASUREMENTS) from one pump; bearing wear starts at ``fault_at`` s."""
    pump = PumpModel(seed)
    rows = []
    for t in range(0, seconds, 5):
        if fault_at is not None and t == fault_at:
            pump.inject_fault("bearing_wear", rate=rate)
        r = pump.step(float(t))
        rows.append([r[m] for m in MEASUREMENTS])
    return np.array(rows[1:])


@pytest.fixture(scope="module")
def good() -> np.ndarray:
    return run(seed=1, seconds=4 * 3600)  # four hours of a healthy pump: ~24 demand cycles


@pytest.mark.parametrize("kind", ["pca", "iforest"])
def test_each_kind_detects_bearing_wear_within_its_false_alarm_target(good: np.ndarray, kind: str) -> None:
    """Each model kind flags mild bearing wear within 5 min and keeps unseen healthy data under 2× its target."""
    model = train(list(MEASUREMENTS), good, target_far=TARGET, kinds=(kind,))  # type: ignore[arg-type]
    unseen = run(seed=7, seconds=2 * 3600)
    assert np.mean(model.is_anomaly(unseen)) <= 2 * TARGET
    faulty = run(seed=9, seconds=1800, fault_at=600)
    flagged = model.is_anomaly(faulty)
    first = int(np.argmax(flagged[600 // 5 :])) * 5
    assert flagged[600 // 5 :].any() and first <= 300, f"{kind}: detected {first} s after the fault started"
    assert flagged[-60:].mean() > 0.9  # and keeps detecting as the bearing degrades


def test_train_keeps_the_better_model_given_fault_examples(good: np.ndarray) -> None:
    """With fault examples the model with the higher detection rate is kept, and its metrics say so."""
    faulty = run(seed=3, seconds=1200, fault_at=0)
    model = train(list(MEASUREMENTS), good, target_far=TARGET, faulty=faulty)
    assert model.kind in ("pca", "iforest")
    assert model.metrics["detection_rate"] >= 0.5
    assert model.metrics["target_far"] == TARGET


def test_too_little_known_good_data_says_how_much_is_needed() -> None:
    """Training on too few rows, or on rows with NaN, fails with what to change."""
    with pytest.raises(AnomalyTrainingError, match="widen the training window"):
        train(["a", "b"], np.zeros((40, 2)), target_far=0.001)
    bad = np.ones((1000, 2))
    bad[3, 1] = np.nan
    with pytest.raises(AnomalyTrainingError, match="NaN"):
        train(["a", "b"], bad)
