"""Anomaly models, pure (numpy/scikit-learn, no I/O): train, calibrate, choose, score, explain.

The small Python API (used by :mod:`rules.anomaly_rules`, the workbench and ``bench/``)::

    model = train([Segment(ts_ms, values), ...], ModelSpec(tags=("flow", "bearing_temp"), target_far=0.01))
    model.card                       # what it is and how it was chosen (JSON-ready)
    s = score(model, ts_ms, values)  # s.scores in multiples of the threshold (> 1: anomalous), NaN: warming up
    explain(model, ts_ms, values, rows=[i])  # which tags drove row i's score, against their normal range

**Features.** :mod:`rules.features` turns readings into feature rows (the reading itself, or windowed
level, slope, spread, rate of change, time-of-day residual); rows whose window is not full yet are
*warming up*: never scored, never alarming.

**Candidates**, each on features standardised with the fit rows' mean and standard deviation:

* ``residual`` (the default) — each feature regressed (ridge) on the *other* tags' features, scored by the
  largest residual in units of its spread on the fit rows (:class:`_Residual`): the condition-monitoring
  practice of modelling each signal from the operating variables. A load or set-point change moves the tags
  together, as they did in training, so it does not alarm even at an operating point the window never saw
  (the other kinds measure a distance *from the training rows*, and alarm there); a step, drift, spike or
  broken correlation on one tag breaks the relation and does;
* ``pca`` — principal components keeping :data:`VARIANCE_SHARE` of the variance, never all of them (at
  least one residual direction when there are two features or more); the score is Hotelling's T² over
  the kept components divided by their number, plus the residual Q divided by its mean on the fit rows —
  floored at :data:`RESIDUAL_FLOOR` of the total variance, so a residual that is floating-point noise
  (1e-29) can never dominate the score;
* ``iforest`` — scikit-learn's IsolationForest; the score is the negated ``score_samples``;
* ``knn`` — mean distance to the :data:`KNN_K` nearest fit rows: follows several operating modes (load
  levels, set points) that one linear model blurs together.

**Feature groups.** With features of several families (levels; each windowed kind), a candidate fits one
detector per group (:func:`feature_groups`), divides each group's score by its :data:`GROUP_QUANTILE` on the
fit rows and takes the largest (:class:`_Grouped`); that combined score is what is calibrated below.

**Calibration** is cross-conformal over time-ordered folds: the clean rows are cut into :data:`BLOCKS`
consecutive time blocks dealt in turn to :data:`FOLDS` folds; each fold is scored by a model fitted on
the other folds (minus a purge of one feature window around each held-out block), so every row gets an
*out-of-fold* score from a model that never saw it, while every model has seen every part of the window
(each operating mode, day and night: with one block per fold, a mode seen in one block only made the
threshold needlessly high, and a steady machine's rate fell to a third of the target). The threshold is
the conformal ``1 - target_far`` quantile of all out-of-fold scores, and the final model is fitted on
every clean row. This needs at least ``10 / target_far`` rows (refused, or
only warned with ``insufficient_data="warn"``), and :data:`MIN_ROWS_PER_FEATURE` rows per feature.

**Validation and selection.** The *held-out false-alarm rate* of a candidate is measured fold by fold:
the threshold is re-calibrated without fold k and applied to fold k's out-of-fold scores — the rate on
normal data that neither the model nor its threshold saw. Its *detection rate* is measured on fault
examples when given, else on synthetic deviations of the held-out rows (one feature pushed 3–5 standard
deviations, or replaced by its value at another time). A candidate that cannot reach its threshold (no
out-of-fold score above it: ties, a degenerate score) is never selected. Among the others the highest
detection rate wins; ties (within 0.01) go to the held-out rate closest to the target, then to the order
of ``kinds``. When no candidate qualifies, training fails and says why for each.

**Honest data.** A robust screen (median / MAD per level feature) looks for sustained departures in the
training rows — a fault inside the window would otherwise be learned as normal. Runs of at least
:data:`SCREEN_MIN_RUN` rows beyond :data:`SCREEN_Z` robust deviations are left out of training and
reported with where they are; when they are more than :data:`SCREEN_MAX_SHARE` of the rows they are kept
and a warning says the window may not be normal operation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args

import numpy as np

from rules.features import FeatureError, FeatureMap, fit_feature_map

Kind = Literal["residual", "pca", "iforest", "knn"]
KINDS: tuple[str, ...] = get_args(Kind)
Policy = Literal["refuse", "warn"]

FOLDS = 5
BLOCKS = 20
VARIANCE_SHARE = 0.9
RESIDUAL_FLOOR = 0.01
#: ``residual``: the ridge penalty (per fit row, on standardised features) of each feature's regression on the
#: other tags' features, and the floor of a residual's standard deviation (in the feature's standard deviations).
RIDGE = 1e-3
RESIDUAL_SD_FLOOR = 0.01
KNN_K = 10
KNN_MAX_FIT = 4000
MIN_ROWS_PER_FEATURE = 20
SCREEN_Z = 6.0
SCREEN_MIN_RUN = 3
SCREEN_MAX_SHARE = 0.1
#: Features the screen looks at: levels. Slopes, spreads and rates jump at every normal load or set-point
#: change; a screen on them would leave those changes out of training and make them alarm.
SCREENED = frozenset({"level", "mean", "time_of_day"})
#: Feature kinds scored together as one group (the others: one group per kind), see :class:`_Grouped`.
LEVEL_FAMILY = frozenset({"level", "mean", "time_of_day"})
#: Each group's score is divided by this quantile of its scores on the fit rows before taking the largest.
GROUP_QUANTILE = 0.99
#: A candidate later in ``kinds`` must detect this much more to be preferred to an earlier (simpler) one.
MARGIN = 0.05
#: The last share of the window (in time) that forward validation holds out, and the fewest rows it needs.
VALIDATION_SHARE = 0.2
MIN_VALIDATION_ROWS = 50
SELECTION_RULE = (
    "never a candidate that cannot reach its threshold; each threshold is the larger of the conformal quantile of "
    "out-of-fold scores and the quantile on the validation split (the last 20 % of the window, scored by a model "
    "trained on the rest); the highest detection rate on the validation split at that threshold (fault examples "
    "when given, else synthetic deviations) wins, but a candidate later in condition.models must detect at least "
    "0.05 more than an earlier one to be preferred"
)


class AnomalyTrainingError(ValueError):
    """Not enough (or unusable) known-good data to train; the message says what is missing."""


@dataclass(frozen=True)
class Segment:
    """A stretch of one device's complete readings in time order: ``ts_ms`` (n,) and ``values`` (n × tags)."""

    ts_ms: np.ndarray
    values: np.ndarray
    label: str = ""  # the device, in contamination reports


@dataclass(frozen=True)
class ModelSpec:
    """What to train: tags, features, target false-alarm rate, candidate kinds (in tie-break order)."""

    tags: tuple[str, ...]
    target_far: float = 0.01
    kinds: tuple[str, ...] = ("residual",)  # rules.model.DEFAULT_MODELS
    features: tuple[str, ...] = ("level", "time_of_day", "mean", "spread")  # rules.model.DEFAULT_FEATURES
    window_s: float | None = None
    insufficient_data: Policy = "refuse"
    screen: bool = True
    seed: int = 0


class _Detector(Protocol):
    def score(self, z: np.ndarray) -> np.ndarray: ...


class _Pca:
    """T²/k + Q/q̄ over standardised features (see the module docstring)."""

    def __init__(self, z: np.ndarray) -> None:
        p = z.shape[1]
        centre = z.mean(axis=0)
        _, s, vt = np.linalg.svd(z - centre, full_matrices=False)
        eig = s * s / max(len(z) - 1, 1)
        total = float(eig.sum()) or 1.0
        k = int(np.searchsorted(np.cumsum(eig) / total, VARIANCE_SHARE) + 1)
        k = max(1, min(k, p - 1 if p > 1 else 1, len(eig)))
        self.centre = centre
        self.components = vt[:k].T  # p × k
        self.eig = np.maximum(eig[:k], RESIDUAL_FLOOR * total / p)
        self.k = k
        self.residual = p > k
        q = self._q(z)
        self.q_scale = max(float(q.mean()) if self.residual else 1.0, RESIDUAL_FLOOR * total)

    def _q(self, z: np.ndarray) -> np.ndarray:
        c = z - self.centre
        r = c - (c @ self.components) @ self.components.T
        out: np.ndarray = np.sum(r * r, axis=1)
        return out

    def score(self, z: np.ndarray) -> np.ndarray:
        t = (z - self.centre) @ self.components
        t2: np.ndarray = np.sum(t * t / self.eig, axis=1) / self.k
        if not self.residual:
            return t2
        out: np.ndarray = t2 + self._q(z) / self.q_scale
        return out


class _Residual:
    """Each feature as a function of the *other* tags' features, scored by the residual.

    Per column, a ridge regression (penalty :data:`RIDGE` per row) on every column that belongs to another tag,
    fitted on the fit rows; the residual is divided by its standard deviation on them (floored at
    :data:`RESIDUAL_SD_FLOOR`) and the score is the largest absolute standardised residual of the row. A load or
    set-point change moves the tags together, as on the fit rows, so the residuals stay small even at an operating
    point the window never saw; a step, drift, spike or broken correlation on one tag does not, and shows in its
    own residual (and, less, in those it predicts). A column without another tag (a single-tag rule) is compared
    with its fit mean: the score is then the largest absolute z-score.
    """

    def __init__(self, z: np.ndarray, owners: np.ndarray) -> None:
        n, p = z.shape
        self.fits: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, float]] = []
        for c in range(p):
            others = np.flatnonzero(owners != owners[c])
            y = z[:, c]
            ym = float(y.mean())
            x = z[:, others]
            xm = x.mean(axis=0)
            xc = x - xm
            beta = np.linalg.solve(xc.T @ xc + RIDGE * n * np.eye(len(others)), xc.T @ (y - ym))
            e = y - ym - xc @ beta
            self.fits.append((others, xm, ym, beta, max(float(e.std()), RESIDUAL_SD_FLOOR)))

    def residuals(self, z: np.ndarray) -> np.ndarray:
        """Standardised residual per row and column."""
        out = np.empty(z.shape)
        for c, (others, xm, ym, beta, sd) in enumerate(self.fits):
            out[:, c] = (z[:, c] - ym - (z[:, others] - xm) @ beta) / sd
        return out

    def score(self, z: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.abs(self.residuals(z)).max(axis=1)
        return out


class _Forest:
    def __init__(self, z: np.ndarray, seed: int) -> None:
        from sklearn.ensemble import IsolationForest

        self.forest = IsolationForest(n_estimators=100, random_state=seed).fit(z)

    def score(self, z: np.ndarray) -> np.ndarray:
        out: np.ndarray = -self.forest.score_samples(z)
        return out


class _Knn:
    """Mean distance to the nearest fit rows. Distances shrink as the reference set grows, so the final
    model keeps as many rows as a fold's model had (``share``): its scores match the calibration's."""

    def __init__(self, z: np.ndarray, seed: int, share: float = 1.0) -> None:
        from sklearn.neighbors import NearestNeighbors

        keep = min(KNN_MAX_FIT, max(1, round(len(z) * share)))
        if len(z) > keep:  # an even thinning in time keeps every operating mode in proportion
            z = z[np.linspace(0, len(z) - 1, keep).round().astype(int)]
        self.k = min(KNN_K, len(z))
        self.nn = NearestNeighbors(n_neighbors=self.k).fit(z)

    def score(self, z: np.ndarray) -> np.ndarray:
        dist, _ = self.nn.kneighbors(z)
        out: np.ndarray = dist.mean(axis=1)
        return out


@dataclass
class _Scaler:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, f: np.ndarray) -> _Scaler:
        mean = f.mean(axis=0)
        std = f.std(axis=0)
        std = np.where(std > 1e-9 * (np.abs(mean) + 1.0), std, 1.0)  # a constant feature carries nothing
        return cls(mean, std)

    def __call__(self, f: np.ndarray) -> np.ndarray:
        out: np.ndarray = (f - self.mean) / self.std
        return out


class _Grouped:
    """One detector per feature group (column subset), each score divided by its own
    :data:`GROUP_QUANTILE` quantile on the fit rows; the score is the largest of them. A deviation
    in one kind of feature (a stuck sensor's spread) is then not diluted by the many features
    that stay normal (every level), and each group keeps the sensitivity it has alone."""

    def __init__(
        self, kind: str, z: np.ndarray, seed: int, share: float, groups: list[np.ndarray], owners: np.ndarray
    ) -> None:
        self.groups = groups
        self.parts = [_fit_detector(kind, z[:, g], seed, share, owners=owners[g]) for g in groups]
        self.scales = []
        for g, det in zip(groups, self.parts, strict=True):
            fit = det.score(z[:, g])
            self.scales.append(max(float(np.quantile(fit, GROUP_QUANTILE)), 1e-12))

    def score(self, z: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.max(
            [det.score(z[:, g]) / sc for g, det, sc in zip(self.groups, self.parts, self.scales, strict=True)],
            axis=0,
        )
        return out


def feature_groups(names: Sequence[str]) -> list[np.ndarray]:
    """Column indices per feature group: the levels (``level``, ``mean``, ``time_of_day``) together,
    every windowed kind (``spread``, ``slope``, ``rate``) apart; one group when there is one family."""
    fam: dict[str, list[int]] = {}
    for i, nm in enumerate(names):
        kind = nm.rsplit(".", 1)[1]
        fam.setdefault("level" if kind in LEVEL_FAMILY else kind, []).append(i)
    return [np.asarray(v) for v in fam.values()]


def feature_owners(names: Sequence[str]) -> np.ndarray:
    """The tag of each feature column, as a number (``residual`` regresses a column on the other tags' only)."""
    tags = [nm.rsplit(".", 1)[0] for nm in names]
    index = {t: i for i, t in enumerate(dict.fromkeys(tags))}
    return np.array([index[t] for t in tags], dtype=np.int64)


def _fit_detector(
    kind: str,
    z: np.ndarray,
    seed: int,
    share: float = 1.0,
    groups: list[np.ndarray] | None = None,
    owners: np.ndarray | None = None,
) -> _Detector:
    if owners is None:
        owners = np.arange(z.shape[1])
    if groups is not None and len(groups) > 1:
        return _Grouped(kind, z, seed, share, groups, owners)
    if kind == "residual":
        return _Residual(z, owners)
    if kind == "pca":
        return _Pca(z)
    if kind == "iforest":
        return _Forest(z, seed)
    if kind == "knn":
        return _Knn(z, seed, share)
    raise AnomalyTrainingError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")


@dataclass
class AnomalyModel:
    """A trained, calibrated model: features of ``tags``, a detector, a threshold and its card."""

    kind: str
    tags: tuple[str, ...]
    features: FeatureMap
    threshold: float
    card: dict[str, Any] = field(default_factory=dict)
    _scaler: _Scaler | None = field(default=None, repr=False)
    _detector: Any = field(default=None, repr=False)

    @property
    def metrics(self) -> dict[str, Any]:
        """The model card (kept under its former name)."""
        return self.card

    @property
    def window_s(self) -> float:
        """How much history before a reading its features need (0: none)."""
        return self.features.window_s if self.features.windowed else 0.0

    def raw_scores(self, feats: np.ndarray) -> np.ndarray:
        """Detector score per feature row (bigger is more anomalous)."""
        assert self._scaler is not None and self._detector is not None
        if not len(feats):
            return np.empty(0)
        out: np.ndarray = self._detector.score(self._scaler(np.asarray(feats, dtype=float)))
        return out

    def score(self, x: np.ndarray, ts_ms: np.ndarray | None = None) -> np.ndarray:
        """Raw score per row of readings ``x`` (rows × tags); NaN for rows still warming up.

        Models with windowed or time-of-day features need the readings' ``ts_ms`` (in time order).
        """
        x = np.atleast_2d(np.asarray(x, dtype=float))
        if ts_ms is None:
            if self.features.kinds != ("level",):
                raise ValueError(f"this model's features ({', '.join(self.features.kinds)}) need ts_ms")
            ts_ms = np.arange(len(x), dtype=np.int64)
        feats, ready = self.features.transform(np.asarray(ts_ms), x)
        out = np.full(len(x), np.nan)
        out[ready] = self.raw_scores(feats[ready])
        return out

    def is_anomaly(self, x: np.ndarray, ts_ms: np.ndarray | None = None) -> np.ndarray:
        s = self.score(x, ts_ms)
        return np.asarray(np.nan_to_num(s, nan=-np.inf) > self.threshold)


@dataclass(frozen=True)
class Scored:
    """Scores of a stretch of readings, in multiples of the model's threshold; NaN where not ``ready``."""

    ts_ms: np.ndarray
    scores: np.ndarray
    ready: np.ndarray


def score(model: AnomalyModel, ts_ms: np.ndarray, values: np.ndarray) -> Scored:
    """Score readings in time order: ``1.0`` is the calibrated threshold; NaN rows are warming up."""
    raw = model.score(values, np.asarray(ts_ms))
    return Scored(np.asarray(ts_ms), raw / model.threshold, np.isfinite(raw))


@dataclass(frozen=True)
class Driver:
    """One tag's part in a score: its share, its reading and its normal range (from training)."""

    tag: str
    share: float
    value: float
    normal_low: float
    normal_high: float
    features: dict[str, float]

    @property
    def outside(self) -> str:
        """``high``, ``low`` or ``in range``."""
        if self.value > self.normal_high:
            return "high"
        if self.value < self.normal_low:
            return "low"
        return "in range"


@dataclass(frozen=True)
class Explanation:
    """Why a row scored as it did: the tags that drove it, largest share first."""

    score: float
    drivers: list[Driver]

    def summary(self, top: int = 3) -> str:
        """``bearing_temp 71.2 high (normal 58–62) 74 %; vibration 4.1 in range (normal 2.2–4.5) 20 %``."""
        parts = []
        for d in self.drivers[:top]:
            parts.append(
                f"{d.tag} {d.value:.4g} {d.outside} (normal {d.normal_low:.4g}–{d.normal_high:.4g}) "
                f"{round(100 * d.share)} %"
            )
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "drivers": [
                {
                    "tag": d.tag,
                    "share": round(d.share, 4),
                    "value": d.value,
                    "normal": [d.normal_low, d.normal_high],
                    "outside": d.outside,
                    "features": {k: round(v, 4) for k, v in d.features.items()},
                }
                for d in self.drivers
            ],
            "summary": self.summary(),
        }


def explain(
    model: AnomalyModel, ts_ms: np.ndarray, values: np.ndarray, rows: Sequence[int]
) -> list[Explanation | None]:
    """Which tags drove the score of each of ``rows`` (indices into the readings; None: warming up).

    A feature's part is how much the score falls when that feature alone is put back to its training
    mean; a tag's share is its features' part of the total. The same for every model kind.
    """
    values = np.atleast_2d(np.asarray(values, dtype=float))
    feats, ready = model.features.transform(np.asarray(ts_ms), values)
    names = model.features.names
    ftags = model.features.feature_tags
    normal = model.card.get("normal_range", {})
    assert model._scaler is not None
    out: list[Explanation | None] = []
    for i in rows:
        if not ready[i]:
            out.append(None)
            continue
        row = feats[i : i + 1]
        base = float(model.raw_scores(row)[0])
        probes = np.repeat(row, len(names), axis=0)
        probes[np.arange(len(names)), np.arange(len(names))] = model._scaler.mean
        drops = np.maximum(base - model.raw_scores(probes), 0.0)
        if drops.sum() <= 0:  # nothing single stands out: share by distance from normal
            drops = np.abs(model._scaler(row)[0])
        total = float(drops.sum()) or 1.0
        drivers = []
        for j, tag in enumerate(model.tags):
            parts = {names[c].split(".", 1)[1]: float(drops[c] / total) for c in range(len(names)) if ftags[c] == tag}
            lo, hi = normal.get(tag, [math.nan, math.nan])
            drivers.append(Driver(tag, sum(parts.values()), float(values[i, j]), float(lo), float(hi), parts))
        drivers.sort(key=lambda d: -d.share)
        out.append(Explanation(base / model.threshold, drivers))
    return out


# --- training -----------------------------------------------------------------------------------


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _conformal(scores: np.ndarray, alpha: float) -> float:
    """The conformal ``1 - alpha`` quantile: the ⌈(n+1)(1-α)⌉-th smallest score (inf if n is too small)."""
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n or n == 0:
        return math.inf
    return float(np.partition(scores, k - 1)[k - 1])


def _screen(
    feats: np.ndarray, seg: np.ndarray, ts: np.ndarray, labels: list[str], names: list[str]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows in sustained robust-outlier runs: (mask, [{device, start, end, rows, features}])."""
    med = np.median(feats, axis=0)
    mad = 1.4826 * np.median(np.abs(feats - med), axis=0)
    std = feats.std(axis=0)
    scale = np.where(mad > 1e-12, mad, np.where(std > 1e-12, std, np.inf))
    z = np.abs(feats - med) / scale
    flagged = (z > SCREEN_Z).any(axis=1)
    mask = np.zeros(len(feats), dtype=bool)
    runs: list[dict[str, Any]] = []
    i, n = 0, len(feats)
    while i < n:
        if not flagged[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flagged[j + 1] and seg[j + 1] == seg[i]:
            j += 1
        if j - i + 1 >= SCREEN_MIN_RUN:
            mask[i : j + 1] = True
            cols = np.where((z[i : j + 1] > SCREEN_Z).any(axis=0))[0]
            runs.append(
                {
                    "device": labels[int(seg[i])],
                    "start": _iso(int(ts[i])),
                    "end": _iso(int(ts[j])),
                    "rows": int(j - i + 1),
                    "features": [names[c] for c in cols],
                }
            )
        i = j + 1
    return mask, runs


def _synthetic(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Deviations of held-out rows: one feature pushed 3–5 σ, or replaced by its value at another time."""
    out = z.copy()
    n, p = z.shape
    cols = np.asarray(rng.integers(0, p, size=n))
    push = np.asarray(rng.random(n)) < 0.5
    rows = np.arange(n)
    m = int(push.sum())
    out[rows[push], cols[push]] += rng.choice([-1.0, 1.0], size=m) * rng.uniform(3, 5, size=m)
    other = (rows[~push] + n // 2) % n
    out[rows[~push], cols[~push]] = z[other, cols[~push]]
    return out


@dataclass
class _Candidate:
    kind: str
    oof: np.ndarray
    synth: np.ndarray
    threshold: float = math.inf
    calibration_far: float = 0.0
    holdout_far: float = math.nan
    holdout_by_fold: list[float] = field(default_factory=list)
    detection_rate: float = 0.0
    validation_far: float = math.nan
    validation_detection: float = math.nan
    forward_threshold: float = math.nan
    threshold_from: str = "out-of-fold scores"
    reason: str = ""

    @property
    def qualified(self) -> bool:
        return not self.reason

    def public(self) -> dict[str, Any]:
        return {
            "qualified": self.qualified,
            "reason": self.reason or None,
            "threshold": _finite(self.threshold),
            "threshold_from": self.threshold_from,
            "calibration_far": round(self.calibration_far, 6),
            "holdout_far": _finite(self.holdout_far, 6),
            "holdout_far_by_fold": [round(x, 6) for x in self.holdout_by_fold],
            "validation_far": _finite(self.validation_far, 6),
            "detection_rate": round(self.detection_rate, 4),
        }


def _finite(x: float, digits: int | None = None) -> float | None:
    if not math.isfinite(x):
        return None
    return round(x, digits) if digits is not None else x


def _folds(ts: np.ndarray, k: int, blocks: int) -> np.ndarray:
    """Fold number per row: ``blocks`` consecutive time blocks of about equal row counts, dealt to ``k`` folds
    in turn — each fold holds stretches from the whole window, so every fold's model has seen every part of it
    (each operating mode, day and night), while each held-out stretch is still contiguous in time."""
    order = np.argsort(ts, kind="stable")
    block = np.empty(len(ts), dtype=np.int64)
    block[order] = np.arange(len(ts)) * blocks // max(len(ts), 1)
    out: np.ndarray = block % k
    return out


def _near(ts: np.ndarray, other: np.ndarray, within_ms: float) -> np.ndarray:
    """Whether each of ``ts`` is within ``within_ms`` of some time in ``other`` (sorted)."""
    if not len(other) or within_ms <= 0:
        return np.zeros(len(ts), dtype=bool)
    i = np.searchsorted(other, ts)
    before = other[np.clip(i - 1, 0, len(other) - 1)]
    after = other[np.clip(i, 0, len(other) - 1)]
    out: np.ndarray = (np.abs(ts - before) <= within_ms) | (np.abs(after - ts) <= within_ms)
    return out


def _out_of_fold(
    kind: str,
    feats: np.ndarray,
    ts: np.ndarray,
    fold: np.ndarray,
    purge_ms: float,
    seed: int,
    rng: np.random.Generator,
    groups: list[np.ndarray] | None = None,
    owners: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Each fold scored by a model fitted on the others (purged around it): (scores, scores of synthetic
    deviations of the same rows, fit sizes)."""
    oof = np.empty(len(feats))
    synth = np.empty(len(feats))
    sizes = []
    for k in range(FOLDS):
        test = fold == k
        if not test.any():
            continue
        fit_rows = ~test & ~_near(ts, np.sort(ts[test]), purge_ms)
        if fit_rows.sum() < max(10, feats.shape[1] + 1):
            fit_rows = ~test
        sizes.append(int(fit_rows.sum()))
        scaler = _Scaler.fit(feats[fit_rows])
        det = _fit_detector(kind, scaler(feats[fit_rows]), seed, groups=groups, owners=owners)
        zt = scaler(feats[test])
        oof[test] = det.score(zt)
        synth[test] = det.score(_synthetic(zt, np.random.default_rng(rng.integers(1 << 31))))
    return oof, synth, sizes


def _validate(
    c: _Candidate,
    feats: np.ndarray,
    ts: np.ndarray,
    early: np.ndarray,
    late: np.ndarray,
    purge_ms: float,
    spec: ModelSpec,
    rng: np.random.Generator,
    groups: list[np.ndarray] | None = None,
    owners: np.ndarray | None = None,
) -> None:
    """Forward validation: trained and calibrated (out of fold) on the early part only, applied to the
    validation split that follows it — the way a model is always used, on data after its window."""
    fe, te = feats[early], ts[early]
    fold = _folds(te, FOLDS, BLOCKS)
    oof, _, sizes = _out_of_fold(c.kind, fe, te, fold, purge_ms, spec.seed, rng, groups, owners)
    threshold = _conformal(oof, spec.target_far)
    if not math.isfinite(threshold):
        return
    scaler = _Scaler.fit(fe)
    det = _fit_detector(c.kind, scaler(fe), spec.seed, float(np.mean(sizes)) / len(fe), groups, owners)
    zv = scaler(feats[late])
    val = det.score(zv)
    c.validation_far = float(np.mean(val > threshold))
    if len(val) >= math.ceil(10 / spec.target_far):
        c.forward_threshold = _conformal(val, spec.target_far)
        threshold = max(threshold, c.forward_threshold)
    c.validation_detection = float(
        np.mean(det.score(_synthetic(zv, np.random.default_rng(rng.integers(1 << 31)))) > threshold)
    )
    c.detection_rate = c.validation_detection


def train(
    segments: Sequence[Segment],
    spec: ModelSpec,
    *,
    faulty: Sequence[Segment] | None = None,
) -> AnomalyModel:
    """Fit, calibrate and choose a model on known-good ``segments`` (see the module docstring)."""
    tags = tuple(spec.tags)
    if not tags:
        raise AnomalyTrainingError("an anomaly model needs at least one tag")
    if not 0 < spec.target_far < 0.5:
        raise AnomalyTrainingError(f"target_far must be within (0, 0.5), not {spec.target_far}")
    kinds = tuple(dict.fromkeys(spec.kinds))
    for kind in kinds:
        if kind not in KINDS:
            raise AnomalyTrainingError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    labels: list[str] = []
    for s in segments:
        ts = np.asarray(s.ts_ms, dtype=np.int64)
        x = np.asarray(s.values, dtype=float)
        if x.ndim != 2 or x.shape[1] != len(tags) or len(ts) != len(x):
            raise AnomalyTrainingError(f"known-good data must be rows × {len(tags)} tags, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise AnomalyTrainingError("known-good data contains NaN or infinite values; fill or drop those rows")
        if len(ts):
            pairs.append((ts, x))
            labels.append(s.label)
    try:
        fmap = fit_feature_map(tags, spec.features, pairs, spec.window_s)
        rows = [fmap.transform(ts, x) for ts, x in pairs]
    except FeatureError as exc:
        raise AnomalyTrainingError(str(exc)) from None
    names = fmap.names
    warnings: list[str] = []
    if rows:
        feats = np.concatenate([f[r] for f, r in rows])
        ts_all = np.concatenate([ts[r] for (ts, _), (_, r) in zip(pairs, rows, strict=True)])
        seg = np.concatenate([np.full(int(r.sum()), i) for i, (_, r) in enumerate(rows)])
        raw = np.concatenate([x[r] for (_, x), (_, r) in zip(pairs, rows, strict=True)])
    else:
        feats, ts_all, seg, raw = (
            np.empty((0, len(names))),
            np.empty(0, np.int64),
            np.empty(0),
            np.empty((0, len(tags))),
        )
    warming = sum(len(ts) for ts, _ in pairs) - len(feats)
    hard_min = max(50, 2 * len(names), FOLDS * 10)
    if len(feats) < hard_min:
        raise AnomalyTrainingError(
            f"{len(feats)} known-good rows (after {warming} warming up); training needs at least {hard_min}: "
            "widen the training window"
        )
    contamination: list[dict[str, Any]] = []
    if spec.screen:
        levels = [i for i, nm in enumerate(names) if nm.rsplit(".", 1)[1] in SCREENED]
        cols = levels or list(range(len(names)))
        mask, contamination = _screen(feats[:, cols], seg, ts_all, labels, [names[i] for i in cols])
        share = mask.mean() if len(mask) else 0.0
        if share > SCREEN_MAX_SHARE:
            warnings.append(
                f"{100 * share:.0f} % of the training rows depart from the rest (see contamination): the window may "
                "not be normal operation, or holds several operating modes; they were kept"
            )
        elif mask.any():
            feats, ts_all, seg, raw = feats[~mask], ts_all[~mask], seg[~mask], raw[~mask]
    n = len(feats)
    need_cal = math.ceil(10 / spec.target_far)
    need_feat = MIN_ROWS_PER_FEATURE * len(names)
    short = []
    if n < need_cal:
        short.append(
            f"calibrating to a false-alarm rate of {spec.target_far:g} needs at least {need_cal} known-good rows "
            f"(10 / target_far), there are {n}"
        )
    if n < need_feat:
        short.append(
            f"{len(names)} features need at least {need_feat} rows ({MIN_ROWS_PER_FEATURE} per feature), there are {n}"
        )
    if short:
        if spec.insufficient_data == "refuse":
            raise AnomalyTrainingError(
                "; ".join(short) + ": widen the training window, raise target_far, use fewer tags or features, "
                "or set training.insufficient_data: warn to train anyway"
            )
        warnings.extend(s + " (trained anyway: insufficient_data is warn)" for s in short)

    purge_ms = fmap.window_s * 1000.0
    groups = feature_groups(names)
    owners = feature_owners(names)
    fold = _folds(ts_all, FOLDS, BLOCKS)
    rng = np.random.default_rng(spec.seed)
    candidates: list[_Candidate] = []
    fit_sizes: list[int] = []
    # The validation split: the last VALIDATION_SHARE of the window in time, after a purge of one feature window.
    cut = float(np.quantile(ts_all, 1 - VALIDATION_SHARE))
    early, late = ts_all < cut - purge_ms, ts_all >= cut
    forward = early.sum() >= hard_min and late.sum() >= MIN_VALIDATION_ROWS
    for kind in kinds:
        oof, synth, sizes = _out_of_fold(kind, feats, ts_all, fold, purge_ms, spec.seed, rng, groups, owners)
        fit_sizes.extend(sizes)
        c = _calibrate(kind, oof, synth, fold, spec.target_far)
        if forward and c.qualified:
            _validate(c, feats, ts_all, early, late, purge_ms, spec, rng, groups, owners)
            if math.isfinite(c.forward_threshold) and c.forward_threshold > c.threshold:
                c.threshold = c.forward_threshold
                c.threshold_from = "validation split"
                c.calibration_far = float(np.mean(oof > c.threshold))
        candidates.append(c)

    final_scaler = _Scaler.fit(feats)
    fold_share = float(np.mean(fit_sizes)) / n  # the share of rows a fold's model was fitted on
    fitted: dict[str, _Detector] = {}
    if faulty:  # detection on the fault examples, by each usable candidate fitted on every clean row
        for c in candidates:
            if not c.qualified:
                continue
            fitted[c.kind] = _fit_detector(c.kind, final_scaler(feats), spec.seed, fold_share, groups, owners)
            probe = AnomalyModel(c.kind, tags, fmap, c.threshold, {}, final_scaler, fitted[c.kind])
            fs = np.concatenate([probe.score(s.values, s.ts_ms) for s in faulty])
            fs = fs[np.isfinite(fs)]
            c.detection_rate = float(np.mean(fs > c.threshold)) if len(fs) else 0.0
    best = _choose(candidates, kinds)
    if best is None:
        reasons = "; ".join(f"{c.kind}: {c.reason}" for c in candidates)
        raise AnomalyTrainingError(f"no candidate model can be used ({reasons}): check the training data")
    detector = fitted.get(best.kind) or _fit_detector(
        best.kind, final_scaler(feats), spec.seed, fold_share, groups, owners
    )
    for c in candidates:
        if c.qualified and not math.isfinite(c.holdout_far):
            warnings.append(f"{c.kind}: the held-out false-alarm rate could not be measured")
    if math.isfinite(best.validation_far) and best.validation_far > 1.5 * spec.target_far:
        warnings.append(
            f"on the validation split (the last {100 * VALIDATION_SHARE:.0f} % of the window) a model trained on the "
            f"rest alarmed on {100 * best.validation_far:.2g} % of normal readings, against a target of "
            f"{100 * spec.target_far:.2g} %: normal operation late in the window is unlike the rest"
            + (
                "; the threshold was raised to the validation split's own"
                if best.threshold_from == "validation split"
                else ""
            )
            + " — a window that covers every normal mode helps"
        )
    if best.holdout_far > 1.5 * spec.target_far or best.holdout_far < 0.5 * spec.target_far:
        warnings.append(
            f"held-out false-alarm rate {best.holdout_far:.4g} is outside 0.5–1.5 × the target {spec.target_far:g}: "
            "normal operation differs between parts of the window (see holdout_far_by_fold); a longer window that "
            "covers every normal mode helps"
        )
    components = detector.k if isinstance(detector, _Pca) else None
    card: dict[str, Any] = {
        "kind": best.kind,
        "tags": list(tags),
        "features": names,
        "window_s": fmap.window_s if fmap.windowed else 0.0,
        "components": components,
        "training_rows": n,
        "calibration_rows": n,
        "warming_up_rows": int(warming),
        "folds": FOLDS,
        "target_far": spec.target_far,
        "threshold": best.threshold,
        "calibration_far": round(best.calibration_far, 6),
        "holdout_far": _finite(best.holdout_far, 6),
        "holdout_far_by_fold": [round(x, 6) for x in best.holdout_by_fold],
        "validation_far": _finite(best.validation_far, 6),
        "validation_rows": int(late.sum()) if forward else 0,
        "threshold_from": best.threshold_from,
        "detection_rate": round(best.detection_rate, 4),
        "detection_on": "fault examples" if faulty else "synthetic deviations",
        "selection": {
            "rule": SELECTION_RULE,
            "chosen": best.kind,
            "candidates": {c.kind: c.public() for c in candidates},
        },
        "normal_range": {
            t: [float(np.quantile(raw[:, j], 0.005)), float(np.quantile(raw[:, j], 0.995))] for j, t in enumerate(tags)
        },
        "contamination": contamination,
        "insufficient_data": spec.insufficient_data,
        "warnings": warnings,
    }
    return AnomalyModel(best.kind, tags, fmap, best.threshold, card, final_scaler, detector)


def _calibrate(kind: str, oof: np.ndarray, synth: np.ndarray, fold: np.ndarray, target: float) -> _Candidate:
    c = _Candidate(kind, oof, synth)
    c.threshold = _conformal(oof, target)
    if not math.isfinite(c.threshold):
        c.reason = "too few rows to calibrate"
        return c
    c.calibration_far = float(np.mean(oof > c.threshold))
    if c.calibration_far == 0.0:
        c.reason = "no out-of-fold score is above its threshold (tied or degenerate scores): it could never alarm"
        return c
    for k in range(FOLDS):
        test = fold == k
        thr = _conformal(oof[~test], target)
        if test.any() and math.isfinite(thr):
            c.holdout_by_fold.append(float(np.mean(oof[test] > thr)))
    c.holdout_far = float(np.mean(c.holdout_by_fold)) if c.holdout_by_fold else math.nan
    c.detection_rate = float(np.mean(synth > c.threshold))
    return c


def _choose(candidates: list[_Candidate], kinds: tuple[str, ...]) -> _Candidate | None:
    """The first usable candidate in ``kinds`` order unless a later one detects at least :data:`MARGIN` more."""
    ok = [c for c in candidates if c.qualified]
    if not ok:
        return None
    top = max(c.detection_rate for c in ok)
    return min((c for c in ok if c.detection_rate >= top - MARGIN), key=lambda c: kinds.index(c.kind))
