"""Score a rule's alarms against known incidents, two ways a reliability engineer reads them. Pure.

**Per reading** (point-wise), over the readings the rule judged: a reading is *anomalous* when it
falls inside an incident window, *alarmed* when the rule's alarm is active after it::

    precision          TP / (TP + FP)     of the readings in alarm, the share inside an incident
    recall             TP / (TP + FN)     of the anomalous readings, the share in alarm
    F1                 2TP / (2TP + FP + FN)
    false-alarm rate   FP / (FP + TN)     of the normal readings, the share in alarm
    missed-alarm rate  FN / (FN + TP)     of the anomalous readings, the share not in alarm

(the definitions published anomaly-detection benchmarks use, so numbers compare).

**Per incident and episode** (event-wise): an incident is *detected* when an alarm episode overlaps
it; its *detection delay* runs from the incident's start to the start of the first such episode
(0 when the alarm was already on). An episode overlapping no incident is a *false alarm*; false
alarms per week are counted over the whole window. The same figures are given per incident label
(the fault kind) in ``by_label``.

A ratio with nothing to count (no alarms, no incidents) is ``None``, never a made-up 0 or 1.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Incident:
    """A known fault from ``start_ms`` to ``end_ms`` (both inclusive, epoch ms); ``label`` names its kind."""

    start_ms: int
    end_ms: int
    label: str = ""


class EpisodeLike(Protocol):
    """An alarm episode: opened at ``start_ms``, cleared at ``end_ms`` (None: still active at the window's end)."""

    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int | None: ...


@dataclass(frozen=True)
class PointScore:
    """The per-reading view (module docstring)."""

    readings: int
    anomalous: int
    alarmed: int
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    precision: float | None
    recall: float | None
    f1: float | None
    false_alarm_rate: float | None
    missed_alarm_rate: float | None


@dataclass(frozen=True)
class LabelScore:
    """Event-wise figures for the incidents of one label."""

    incidents: int
    detected: int
    recall: float | None
    mean_detection_delay_s: float | None
    max_detection_delay_s: float | None


@dataclass(frozen=True)
class Score:
    """Event-wise figures (the flat fields) and, when per-reading states were given, the per-reading view."""

    incidents: int
    detected: int
    true_episodes: int
    false_episodes: int
    precision: float | None  # true episodes / episodes (None without episodes)
    recall: float | None  # detected incidents / incidents (None without incidents)
    f1: float | None
    false_alarm_rate: float  # share of incident-free time spent in alarm
    missed_alarm_rate: float | None  # 1 - recall
    mean_detection_delay_s: float | None  # incident start → first alarm (0 if already alarming)
    false_alarms_per_week: float
    median_detection_delay_s: float | None = None
    max_detection_delay_s: float | None = None
    by_label: dict[str, LabelScore] = field(default_factory=dict)
    points: PointScore | None = None
    detection_delays_s: list[float] = field(default_factory=list)  # each detected incident's, in incident order
    window_s: float = 0.0  # the scored window
    incident_free_s: float = 0.0  # … without incidents (what false_alarm_rate is a share of)


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else round(a / b, 4)


def anomalous(ts: NDArray[np.int64], incidents: Sequence[Incident]) -> NDArray[np.bool_]:
    """Whether each time falls inside an incident window (bounds included)."""
    out = np.zeros(len(ts), np.bool_)
    if not incidents or not len(ts):
        return out
    spans = sorted((i.start_ms, i.end_ms) for i in incidents)
    starts = np.array([a for a, _ in spans], np.int64)
    reach = np.maximum.accumulate(np.array([b for _, b in spans], np.int64))  # furthest end so far
    k = np.searchsorted(starts, ts, side="right") - 1  # the last incident starting at or before each time
    inside: NDArray[np.bool_] = (k >= 0) & (ts <= reach[np.maximum(k, 0)])
    return inside


def point_scores(ts: NDArray[np.int64], alarmed: NDArray[np.bool_], incidents: Sequence[Incident]) -> PointScore:
    """The per-reading view for readings at ``ts`` with the alarm state ``alarmed`` after each."""
    pos = anomalous(np.asarray(ts, np.int64), incidents)
    on = np.asarray(alarmed, np.bool_)
    tp = int(np.sum(pos & on))
    fp = int(np.sum(~pos & on))
    fn = int(np.sum(pos & ~on))
    tn = int(np.sum(~pos & ~on))
    return PointScore(
        readings=len(pos),
        anomalous=tp + fn,
        alarmed=tp + fp,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        false_alarm_rate=_ratio(fp, fp + tn),
        missed_alarm_rate=_ratio(fn, fn + tp),
    )


def _overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


def _overlap_len(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def _minus(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end]`` without the ``holes``."""
    out, cur = [], start
    for a, b in sorted(holes):
        if a > cur:
            out.append((cur, min(a, end)))
        cur = max(cur, b)
    if cur < end:
        out.append((cur, end))
    return [(a, b) for a, b in out if b > a]


def score(
    eps: Sequence[EpisodeLike],
    incidents: Sequence[Incident],
    start_ms: int,
    end_ms: int,
    *,
    ts: NDArray[np.int64] | None = None,
    alarmed: NDArray[np.bool_] | None = None,
) -> Score:
    """Score episodes against incidents inside ``[start_ms, end_ms]``; per reading too when ``ts``/``alarmed`` given."""
    incs = [i for i in incidents if _overlaps(i.start_ms, i.end_ms, start_ms, end_ms)]
    spans = [(e.start_ms, e.end_ms if e.end_ms is not None else end_ms) for e in eps]
    true_eps = sum(1 for a, b in spans if any(_overlaps(a, b, i.start_ms, i.end_ms) for i in incs))
    delays: list[float] = []
    per_label: dict[str, list[float | None]] = {}
    for inc in incs:
        hits = [a for a, b in spans if _overlaps(a, b, inc.start_ms, inc.end_ms)]
        delay = max(0, min(hits) - inc.start_ms) / 1000 if hits else None
        per_label.setdefault(inc.label, []).append(delay)
        if delay is not None:
            delays.append(delay)
    precision = true_eps / len(eps) if eps else None
    recall = len(delays) / len(incs) if incs else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    quiet = _minus(start_ms, end_ms, [(i.start_ms, i.end_ms) for i in incs])
    quiet_ms = sum(b - a for a, b in quiet)
    false_ms = sum(_overlap_len(s, q) for s in spans for q in quiet)
    span = max(1, end_ms - start_ms)
    by_label = {}
    for label, ds in per_label.items():
        found = [d for d in ds if d is not None]
        by_label[label] = LabelScore(
            incidents=len(ds),
            detected=len(found),
            recall=_r(len(found) / len(ds)),
            mean_detection_delay_s=_r(statistics.fmean(found) if found else None),
            max_detection_delay_s=_r(max(found) if found else None),
        )
    points = None
    if ts is not None and alarmed is not None:
        points = point_scores(ts, alarmed, incs)
    return Score(
        incidents=len(incs),
        detected=len(delays),
        true_episodes=true_eps,
        false_episodes=len(eps) - true_eps,
        precision=_r(precision),
        recall=_r(recall),
        f1=_r(f1),
        false_alarm_rate=round(false_ms / quiet_ms, 6) if quiet_ms else 0.0,
        missed_alarm_rate=_r(None if recall is None else 1 - recall),
        mean_detection_delay_s=_r(sum(delays) / len(delays) if delays else None),
        false_alarms_per_week=round((len(eps) - true_eps) / (span / WEEK_MS), 3),
        median_detection_delay_s=_r(statistics.median(delays) if delays else None),
        max_detection_delay_s=_r(max(delays) if delays else None),
        by_label=by_label,
        points=points,
        detection_delays_s=[round(d, 3) for d in delays],
        window_s=span / 1000,
        incident_free_s=quiet_ms / 1000,
    )


def _points_sum(parts: Sequence[PointScore]) -> PointScore:
    tp, fp, fn, tn = (
        sum(getattr(p, f) for p in parts)
        for f in ("true_positives", "false_positives", "false_negatives", "true_negatives")
    )
    return PointScore(
        readings=tp + fp + fn + tn,
        anomalous=tp + fn,
        alarmed=tp + fp,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        false_alarm_rate=_ratio(fp, fp + tn),
        missed_alarm_rate=_ratio(fn, fn + tp),
    )


def pool(scores: Sequence[Score]) -> Score:
    """Several devices' (or windows') scores as one: counts added up, every ratio and delay recomputed from them."""
    incidents = sum(s.incidents for s in scores)
    detected = sum(s.detected for s in scores)
    true_eps = sum(s.true_episodes for s in scores)
    false_eps = sum(s.false_episodes for s in scores)
    delays = [d for s in scores for d in s.detection_delays_s]
    window_s = sum(s.window_s for s in scores)
    quiet_s = sum(s.incident_free_s for s in scores)
    precision = true_eps / (true_eps + false_eps) if true_eps + false_eps else None
    recall = detected / incidents if incidents else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    by_label: dict[str, LabelScore] = {}
    for label in dict.fromkeys(k for s in scores for k in s.by_label):
        parts = [s.by_label[label] for s in scores if label in s.by_label]
        n, found = sum(p.incidents for p in parts), sum(p.detected for p in parts)
        timed = [p for p in parts if p.mean_detection_delay_s is not None]
        by_label[label] = LabelScore(
            incidents=n,
            detected=found,
            recall=_r(found / n) if n else None,
            mean_detection_delay_s=_r(sum(p.detected * (p.mean_detection_delay_s or 0.0) for p in timed) / found)
            if found
            else None,
            max_detection_delay_s=max((p.max_detection_delay_s or 0.0 for p in timed), default=None),
        )
    points = [s.points for s in scores if s.points is not None]
    return Score(
        incidents=incidents,
        detected=detected,
        true_episodes=true_eps,
        false_episodes=false_eps,
        precision=_r(precision),
        recall=_r(recall),
        f1=_r(f1),
        false_alarm_rate=round(sum(s.false_alarm_rate * s.incident_free_s for s in scores) / quiet_s, 6)
        if quiet_s
        else 0.0,
        missed_alarm_rate=_r(None if recall is None else 1 - recall),
        mean_detection_delay_s=_r(statistics.fmean(delays) if delays else None),
        false_alarms_per_week=round(false_eps / (max(window_s, 0.001) * 1000 / WEEK_MS), 3),
        median_detection_delay_s=_r(statistics.median(delays) if delays else None),
        max_detection_delay_s=_r(max(delays) if delays else None),
        by_label=by_label,
        points=_points_sum(points) if points and len(points) == len(scores) else None,
        detection_delays_s=delays,
        window_s=window_s,
        incident_free_s=quiet_s,
    )


def incidents_from_labels(ts: Sequence[int], labels: Sequence[str | None]) -> list[Incident]:
    """Per-row labels (None = normal, else the fault's label) → incidents: each run of consecutive rows with one
    label is an incident from its first to its last row's time."""
    out: list[Incident] = []
    run: list[int] = []
    run_label = ""
    for t, label in sorted(zip(ts, labels, strict=True), key=lambda r: r[0]):
        if run and label != run_label:
            out.append(Incident(run[0], run[-1], run_label))
            run = []
        if label is not None:
            run.append(t)
            run_label = label
    if run:
        out.append(Incident(run[0], run[-1], run_label))
    return out
