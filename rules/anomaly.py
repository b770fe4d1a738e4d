"""Multivariate anomaly models, pure (numpy/scikit-learn, no I/O): train, calibrate, score, choose.

Two candidates are trained on a known-good window and each calibrated to the same target
false-alarm rate (the threshold is the ``1 - target`` quantile of its score on a held-out part of
the good data, never the part it was fitted on):

* ``pca`` — standardized tags, principal components keeping 95 % of the variance; the score is
  Hotelling's T² (inside the model) plus the Q residual (outside it), each divided by its
  99th percentile on the training data so neither dominates;
* ``iforest`` — scikit-learn's IsolationForest on the standardized tags; the score is the
  negated ``score_samples`` (bigger = more anomalous).

:func:`train` keeps the better one: with fault examples, the higher detection rate at the
calibrated threshold; without, the lower false-alarm rate on held-out good data. A score above
the model's ``threshold`` is an anomaly — live evaluation compares ``score`` with it through the
same state machine as threshold rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # scikit-learn is imported when a model is fitted, not whenever rules are imported
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest

Kind = Literal["pca", "iforest"]


class AnomalyTrainingError(ValueError):
    """Not enough (or unusable) known-good data to train; the message says what is missing."""


@dataclass
class AnomalyModel:
    """A trained, calibrated model over ``tags`` (in this column order)."""

    kind: Kind
    tags: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    threshold: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    _pca: PCA | None = None
    _t2_scale: float = 1.0
    _q_scale: float = 1.0
    _forest: IsolationForest | None = None

    def score(self, x: np.ndarray) -> np.ndarray:
        """Anomaly score per row of ``x`` (rows × tags); bigger is more anomalous."""
        z = (np.atleast_2d(np.asarray(x, dtype=float)) - self.mean) / self.std
        if self.kind == "pca":
            assert self._pca is not None
            t = self._pca.transform(z)
            t2 = np.sum(t * t / self._pca.explained_variance_, axis=1)
            q = np.sum((z - self._pca.inverse_transform(t)) ** 2, axis=1)
            scores: np.ndarray = t2 / self._t2_scale + q / self._q_scale  # scikit-learn is untyped: Any until here
            return scores
        assert self._forest is not None
        negated: np.ndarray = -self._forest.score_samples(z)
        return negated

    def is_anomaly(self, x: np.ndarray) -> np.ndarray:
        return self.score(x) > self.threshold


def _fit(kind: Kind, tags: tuple[str, ...], good: np.ndarray, seed: int) -> AnomalyModel:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest

    mean = good.mean(axis=0)
    std = good.std(axis=0)
    std[std < 1e-9] = 1.0  # a constant tag carries no information; do not divide by zero
    m = AnomalyModel(kind, tags, mean, std)
    z = (good - mean) / std
    if kind == "pca":
        pca = PCA(n_components=0.95, svd_solver="full").fit(z)
        m._pca = pca
        t = pca.transform(z)
        t2 = np.sum(t * t / pca.explained_variance_, axis=1)
        q = np.sum((z - pca.inverse_transform(t)) ** 2, axis=1)
        m._t2_scale = float(np.quantile(t2, 0.99)) or 1.0
        m._q_scale = float(np.quantile(q, 0.99)) or 1.0
    else:
        m._forest = IsolationForest(n_estimators=100, random_state=seed).fit(z)
    return m


def train(
    tags: list[str] | tuple[str, ...],
    good: np.ndarray,
    *,
    target_far: float = 0.001,
    faulty: np.ndarray | None = None,
    kinds: tuple[Kind, ...] = ("pca", "iforest"),
    seed: int = 0,
) -> AnomalyModel:
    """Fit each kind on the first 70 % of ``good`` (time order), calibrate on the rest, keep the better."""
    good = np.asarray(good, dtype=float)
    if good.ndim != 2 or good.shape[1] != len(tags):
        raise AnomalyTrainingError(f"known-good data must be rows × {len(tags)} tags, got shape {good.shape}")
    if not np.isfinite(good).all():
        raise AnomalyTrainingError("known-good data contains NaN or infinite values; fill or drop those rows")
    need = max(50, int(np.ceil(5 / target_far)) // 2)
    if len(good) < need:
        raise AnomalyTrainingError(
            f"{len(good)} known-good rows; calibrating to a false-alarm rate of {target_far:g} needs at least "
            f"{need}: widen the training window"
        )
    cut = int(len(good) * 0.7)
    fit_part, cal_part = good[:cut], good[cut:]
    best: AnomalyModel | None = None
    for kind in kinds:
        m = _fit(kind, tuple(tags), fit_part, seed)
        cal = m.score(cal_part)
        m.threshold = float(np.quantile(cal, 1 - target_far))
        m.metrics = {
            "target_far": target_far,
            "calibration_far": float(np.mean(cal > m.threshold)),
            "train_rows": float(len(fit_part)),
            "calibration_rows": float(len(cal_part)),
        }
        if faulty is not None and len(faulty):
            m.metrics["detection_rate"] = float(np.mean(m.score(np.asarray(faulty, dtype=float)) > m.threshold))
        if best is None or _better(m, best):
            best = m
    assert best is not None
    return best


def _better(a: AnomalyModel, b: AnomalyModel) -> bool:
    if "detection_rate" in a.metrics and a.metrics["detection_rate"] != b.metrics["detection_rate"]:
        return a.metrics["detection_rate"] > b.metrics["detection_rate"]
    return a.metrics["calibration_far"] < b.metrics["calibration_far"]
