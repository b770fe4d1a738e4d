"""Anomaly rules against PostgreSQL: train and version models, score live vectors, store scores.

The pure model work is :mod:`rules.anomaly`; this module is its I/O shell:

* :func:`train_rule` — resolves each device's known-good window (its own under ``training.devices``,
  or the rule's ``start``/``end``, ``last_days`` or ``first_days`` of *that device's* data), leaves out
  known alarm, maintenance and ticket periods (:func:`exclusions`), loads the vectors of the rule's
  tags (readings taken at the same timestamp) as segments between those periods, trains per *subject*
  (``device:ID``, or ``model:EQUIPMENT_MODEL`` pooled over its devices, each with its own window) and
  stores a new version in ``anomaly_models`` (joblib bytes, threshold, the model card as ``metrics``);
* :class:`AnomalyScorer` — used by :class:`rules.service.RuleEvaluator`: turns committed readings
  into vectors (the batch first, the database for tags committed in earlier batches, and the window
  of history that windowed features need), scores them with the newest model of the subject, in
  multiples of its calibrated threshold, and explains the rows that could open an alarm (which tags
  drove the score): :attr:`AnomalyScorer.explanations`;
* :func:`store_scores` — writes scores as ordinary telemetry (series ``anomaly_score:<rule>``,
  unit ``''``) so they can be charted like any tag;
* :func:`retrain_job` — the scheduled retraining.

Scores then go through the one state machine like any reading: ``levels`` compare the normalized
score (``1.0`` = the calibrated threshold), ``for_s``/``count`` gate the start.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from rules.anomaly import AnomalyModel, AnomalyTrainingError, ModelSpec, Segment, explain, train
from rules.features import FeatureMap
from rules.model import Anomaly, DeviceInfo, Reading, Rule, RuleSpec

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: (rule, device_id, ts_ms, normalized score)
Score = tuple[Rule, int, int, float]
#: ``[start, end)`` in epoch ms, and why it is left out of training
Period = tuple[int, int, str]


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(dt: datetime) -> int:
    return round((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


def _iso(ms: int) -> str:
    return _dt(ms).isoformat().replace("+00:00", "Z")


def subject_of(cond: Anomaly, device: DeviceInfo) -> str:
    """Which model scores ``device``: its own, or its equipment model's."""
    return f"device:{device.id}" if cond.grouping == "device" else f"model:{device.equipment_model}"


def model_spec(cond: Anomaly) -> ModelSpec:
    """What :func:`rules.anomaly.train` is asked for by an anomaly condition."""
    return ModelSpec(
        tags=tuple(cond.tags),
        target_far=cond.target_far,
        kinds=tuple(cond.models),
        features=cond.feature_kinds,
        window_s=cond.window_s,
        insufficient_data=cond.training.insufficient_data,
        screen=cond.training.screen,
    )


def training_window(cond: Anomaly, now_ms: int) -> tuple[int, int]:
    """``[start, end)`` of the rule's default window in epoch ms (``last_days`` counted back from now).

    Per device, :func:`device_window` refines it (``first_days``, a device's own window, its last data).
    """
    t = cond.training
    if t.last_days is not None:
        return now_ms - round(t.last_days * DAY_MS), now_ms
    if t.first_days is not None:
        return 0, now_ms
    if t.start is None or t.end is None:
        return now_ms, now_ms
    return _ms(t.start), _ms(t.end)


def _device_names(device: DeviceInfo) -> set[str]:
    return {device.key, f"{device.site}/{device.key}", str(device.id)}


def _data_span(conn: psycopg.Connection, device_id: int, tags: Sequence[str]) -> tuple[int, int] | None:
    row = conn.execute(
        """SELECT (extract(epoch FROM min(t.time)) * 1000)::bigint, (extract(epoch FROM max(t.time)) * 1000)::bigint
           FROM telemetry t JOIN series s ON s.id = t.series_id
           WHERE s.device_id = %s AND s.tag = ANY(%s) AND t.quality = 0""",
        (device_id, list(tags)),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def device_window(conn: psycopg.Connection, cond: Anomaly, device: DeviceInfo, now_ms: int) -> tuple[int, int] | str:
    """The device's known-good window ``[start, end)`` before exclusions, or why it has none yet."""
    t = cond.training
    own = next((w for name, w in t.devices.items() if name in _device_names(device)), None)
    if own is not None:
        return _ms(own.start), _ms(own.end)
    if t.start is not None and t.end is not None:
        return _ms(t.start), _ms(t.end)
    if t.last_days is None and t.first_days is None:
        return f"no training window for {device.key}: add it under condition.training.devices"
    span = _data_span(conn, device.id, cond.tags)
    if span is None:
        return f"{device.key} has no good readings of {', '.join(cond.tags)} yet"
    if t.first_days is not None:
        start, end = span[0], span[0] + round(t.first_days * DAY_MS)
        if end > now_ms:
            return f"collecting: the first {t.first_days:g} days of {device.key}'s data end at {_iso(end)}"
        return start, end
    assert t.last_days is not None
    end = min(now_ms, span[1] + 1)
    return end - round(t.last_days * DAY_MS), end


def exclusions(
    conn: psycopg.Connection, device_id: int, rule_id: int | None, start_ms: int, end_ms: int, kinds: Sequence[str]
) -> list[Period]:
    """Known abnormal periods of a device overlapping ``[start, end)``: other rules' alarms, maintenance
    windows (silences of kind maintenance on the device, its site, or this rule) and tickets.

    The rule's own alarms are not excluded by themselves — its false alarms are part of normal operation it
    must learn; those that led to a ticket are excluded through the ticket.
    """
    lo, hi = _dt(start_ms), _dt(end_ms)
    out: list[Period] = []
    if "alarms" in kinds:
        for a, b, name in conn.execute(
            """SELECT a.triggered_at, coalesce(a.cleared_at, 'infinity'::timestamptz), r.name
               FROM alarms a JOIN rules r ON r.id = a.rule_id
               WHERE a.device_id = %s AND a.rule_id IS DISTINCT FROM %s
                 AND a.triggered_at < %s AND coalesce(a.cleared_at, 'infinity'::timestamptz) > %s""",
            (device_id, rule_id, hi, lo),
        ).fetchall():
            out.append((_ms(a), _clip(b, end_ms), f"alarm of rule {name!r}"))
    if "maintenance" in kinds:
        for a, b, sid in conn.execute(
            """SELECT s.starts_at, s.ends_at, s.id FROM silences s
               WHERE s.kind = 'maintenance' AND s.starts_at < %s AND s.ends_at > %s
                 AND (s.device_id IS NULL OR s.device_id = %s)
                 AND (s.site_id IS NULL OR s.site_id = (SELECT site_id FROM devices WHERE id = %s))
                 AND (s.rule_id IS NULL OR s.rule_id IS NOT DISTINCT FROM %s)
                 AND (s.device_id IS NOT NULL OR s.site_id IS NOT NULL OR s.rule_id IS NOT NULL)""",
            (hi, lo, device_id, device_id, rule_id),
        ).fetchall():
            out.append((_ms(a), _clip(b, end_ms), f"maintenance window {sid}"))
    if "tickets" in kinds:
        for a, b, tid in conn.execute(
            """SELECT created_at,
                      CASE WHEN status IN ('resolved', 'closed') THEN updated_at ELSE 'infinity'::timestamptz END, id
               FROM tickets WHERE device_id = %s AND status <> 'cancelled' AND created_at < %s
                 AND (status NOT IN ('resolved', 'closed') OR updated_at > %s)""",
            (device_id, hi, lo),
        ).fetchall():
            out.append((_ms(a), _clip(b, end_ms), f"ticket {tid}"))
    return sorted(out)


def _clip(dt: datetime, end_ms: int) -> int:
    return end_ms if dt.year > 9000 else _ms(dt)


def _covered(periods: Sequence[Period], start_ms: int, end_ms: int) -> int:
    """Milliseconds of ``[start, end)`` inside any of ``periods``."""
    total, cur = 0, start_ms
    for a, b, _ in sorted(periods):
        a, b = max(a, cur), min(b, end_ms)
        if b > a:
            total += b - a
            cur = b
    return total


def load_vectors(
    conn: psycopg.Connection, device_ids: Sequence[int], tags: Sequence[str], start_ms: int, end_ms: int
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Complete good-quality vectors of ``tags`` in ``[start, end)``: ``[(device, ts_ms)]`` and rows × tags.

    A timestamp where any tag is missing or of bad quality is not a vector and is left out.
    """
    rows = conn.execute(
        """SELECT s.device_id, (extract(epoch FROM t.time) * 1000)::bigint, s.tag, t.value
           FROM telemetry t JOIN series s ON s.id = t.series_id
           WHERE s.device_id = ANY(%s) AND s.tag = ANY(%s) AND t.time >= %s AND t.time < %s AND t.quality = 0""",
        (list(device_ids), list(tags), _dt(start_ms), _dt(end_ms)),
    ).fetchall()
    return _pivot(rows, tags)  # (device, epoch ms as int, tag, value) already


def _pivot(
    rows: Iterable[tuple[int, int, str, float]], tags: Sequence[str]
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(device, ts, tag, value) rows → complete vectors in (device, ts) order; vectorised (backtests pivot 100k+)."""
    col = {t: i for i, t in enumerate(tags)}
    data = rows if isinstance(rows, list) else list(rows)
    n = len(data)
    if not n:
        return [], np.zeros((0, len(tags)))
    d = np.fromiter((r[0] for r in data), np.int64, n)
    t = np.fromiter((r[1] for r in data), np.int64, n)
    order = np.lexsort((t, d))
    d, t = d[order], t[order]
    c = np.fromiter((col[r[2]] for r in data), np.intp, n)[order]
    v = np.fromiter((r[3] for r in data), np.float64, n)[order]
    new = np.ones(len(d), np.bool_)
    new[1:] = (d[1:] != d[:-1]) | (t[1:] != t[:-1])
    group = np.cumsum(new) - 1
    x = np.full((int(group[-1]) + 1, len(tags)), np.nan)
    x[group, c] = v
    complete = ~np.isnan(x).any(axis=1)  # a missing (or NaN) tag: not a vector
    keys = list(zip(d[new][complete].tolist(), t[new][complete].tolist(), strict=True))
    return keys, x[complete]


@dataclass(frozen=True)
class StoredModel:
    """One trained version for one subject of an anomaly rule."""

    id: int
    rule_id: int
    subject: str
    version: int
    trained_at: datetime
    window_start: datetime
    window_end: datetime
    kind: str
    threshold: float
    metrics: dict[str, Any]
    model: AnomalyModel = field(repr=False)
    rule_version: int = 0  # the rule version whose definition it was trained for

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule_id": self.rule_id,
            "subject": self.subject,
            "version": self.version,
            "rule_version": self.rule_version,
            "trained_at": self.trained_at.isoformat(),
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "kind": self.kind,
            "threshold": self.threshold,
            "metrics": self.metrics,
        }

    def normalized(self, x: np.ndarray, ts_ms: np.ndarray | None = None) -> np.ndarray:
        """Scores in multiples of the calibrated threshold (``> 1`` is beyond the target false-alarm rate)."""
        return self.model.score(x, ts_ms) / self.threshold


@dataclass
class TrainingReport:
    """What :func:`train_rule` stored, and which subjects could not be trained (and why)."""

    trained: list[StoredModel] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _scope_devices(conn: psycopg.Connection, spec: RuleSpec) -> list[DeviceInfo]:
    from rules.devices import load_devices

    ids = [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id").fetchall()]
    return [d for d in load_devices(conn, ids).values() if spec.scope.matches(d)]


def _subjects(conn: psycopg.Connection, spec: RuleSpec) -> dict[str, list[DeviceInfo]]:
    cond = spec.condition
    assert isinstance(cond, Anomaly)
    out: dict[str, list[DeviceInfo]] = defaultdict(list)
    for dev in _scope_devices(conn, spec):
        out[subject_of(cond, dev)].append(dev)
    return dict(out)


@dataclass
class TrainingData:
    """Known-good segments of one subject's devices, and what was resolved and left out on the way."""

    segments: list[Segment] = field(default_factory=list)
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def span(self) -> tuple[int, int]:
        starts = [w["start_ms"] for w in self.windows.values()]
        ends = [w["end_ms"] for w in self.windows.values()]
        return (min(starts), max(ends)) if starts else (0, 0)


def training_data(
    conn: psycopg.Connection, spec: RuleSpec, devices: Sequence[DeviceInfo], now_ms: int, rule_id: int | None
) -> TrainingData:
    """Each device's clean segments: its window, widened once by what exclusions took (for ``last_days``
    and ``first_days``, so N days means N days of clean data where history allows), minus those periods."""
    cond = spec.condition
    assert isinstance(cond, Anomaly)
    data = TrainingData()
    for dev in devices:
        win = device_window(conn, cond, dev, now_ms)
        if isinstance(win, str):
            data.skipped[dev.key] = win
            continue
        start, end = win
        kinds = cond.training.exclude
        periods = exclusions(conn, dev.id, rule_id, start, end, kinds) if kinds else []
        lost = _covered(periods, start, end)
        if lost and (cond.training.last_days is not None or cond.training.first_days is not None):
            if cond.training.first_days is not None:
                end = min(end + lost, now_ms)
            else:
                start -= lost
            periods = exclusions(conn, dev.id, rule_id, start, end, kinds)
        keys, x = load_vectors(conn, [dev.id], cond.tags, start, end)
        ts = np.array([k[1] for k in keys], dtype=np.int64)
        keep = np.ones(len(ts), dtype=bool)
        cut = np.zeros(len(ts), dtype=bool)  # a row that starts a new segment
        for a, b, _ in periods:
            inside = (ts >= a) & (ts < b)
            keep &= ~inside
            after = np.searchsorted(ts, b, side="left")
            if after < len(ts):
                cut[after] = True
        seg_id = np.cumsum(cut)
        for sid in np.unique(seg_id[keep]) if keep.any() else []:
            sel = keep & (seg_id == sid)
            data.segments.append(Segment(ts[sel], x[sel], dev.key))
        data.windows[dev.key] = {
            "start_ms": start,
            "end_ms": end,
            "start": _iso(start),
            "end": _iso(end),
            "rows": int(keep.sum()),
            "excluded_rows": int((~keep).sum()),
            "excluded": [{"start": _iso(a), "end": _iso(b), "why": why} for a, b, why in periods],
        }
    return data


def fit(
    conn: psycopg.Connection,
    spec: RuleSpec,
    devices: Sequence[DeviceInfo | int],
    now_ms: int,
    rule_id: int | None = None,
) -> AnomalyModel:
    """Train (not store) a model for ``spec`` on the known-good data of ``devices``; the card says how."""
    from rules.devices import load_devices

    cond = spec.condition
    assert isinstance(cond, Anomaly)
    ids = [d for d in devices if isinstance(d, int)]
    infos = [d for d in devices if isinstance(d, DeviceInfo)]
    infos += [d for d in load_devices(conn, ids).values() if d is not None]
    data = training_data(conn, spec, infos, now_ms, rule_id)
    if not data.segments:
        why = "; ".join(data.skipped.values()) or "no known-good readings in the training window"
        raise AnomalyTrainingError(f"0 known-good rows: {why}: widen the training window")
    model = train(data.segments, model_spec(cond))
    if model.threshold <= 0:
        raise AnomalyTrainingError("the calibrated threshold is not positive: the known-good data is degenerate")
    model.card["windows"] = {
        k: {kk: vv for kk, vv in w.items() if not kk.endswith("_ms")} for k, w in data.windows.items()
    }
    if data.skipped:
        model.card["skipped_devices"] = data.skipped
    span = data.span
    model.card["window_start"], model.card["window_end"] = _iso(span[0]), _iso(span[1])
    return model


def train_rule(
    conn: psycopg.Connection,
    rule: Rule,
    *,
    now_ms: int | None = None,
    author: str = "scheduler",
    subjects: Iterable[str] | None = None,
) -> TrainingReport:
    """Train the subjects of an anomaly rule (every one, or only ``subjects``) and store each as a new version."""
    cond = rule.spec.condition
    if not isinstance(cond, Anomaly):
        raise AnomalyTrainingError(f"rule {rule.name!r} is a {cond.kind} rule, not an anomaly rule")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    report = TrainingReport()
    by_subject = _subjects(conn, rule.spec)
    if not by_subject:
        report.failed["*"] = "no device is in the rule's scope"
    known = {n for devs in by_subject.values() for d in devs for n in _device_names(d)}
    for name in cond.training.devices:
        if name not in known:
            report.failed[f"condition.training.devices.{name}"] = f"no device in the rule's scope is called {name!r}"
    wanted = None if subjects is None else set(subjects)
    for subject, devices in sorted(by_subject.items()):
        if wanted is not None and subject not in wanted:
            continue
        try:
            model = fit(conn, rule.spec, devices, now, rule.id)
        except AnomalyTrainingError as exc:
            report.failed[subject] = str(exc)
            log.warning("anomaly rule %r %s: %s", rule.name, subject, report.failed[subject])
            continue
        report.trained.append(_store(conn, rule, subject, model, author))
    return report


def _store(conn: psycopg.Connection, rule: Rule, subject: str, model: AnomalyModel, author: str) -> StoredModel:
    import joblib

    cond = rule.spec.condition
    assert isinstance(cond, Anomaly)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    start = datetime.fromisoformat(model.card["window_start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(model.card["window_end"].replace("Z", "+00:00"))
    card = _json_safe(model.card)
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO anomaly_models (rule_id, subject, version, rule_version, trained_by, window_start,
                                           window_end, kind, tags, threshold, metrics, model)
               SELECT %s, %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s, %s, %s, %s, %s, %s
               FROM anomaly_models WHERE rule_id = %s AND subject = %s
               RETURNING id, version, trained_at""",
            (
                rule.id,
                subject,
                rule.version,
                author,
                start,
                end,
                model.kind,
                list(cond.tags),
                model.threshold,
                Jsonb(card),
                buf.getvalue(),
                rule.id,
                subject,
            ),
        ).fetchone()
    assert row is not None
    return StoredModel(
        row[0], rule.id, subject, row[1], row[2], start, end, model.kind, model.threshold, card, model, rule.version
    )


def _json_safe(obj: Any) -> Any:
    """The card as JSON (no NaN or infinity: PostgreSQL's jsonb refuses them)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


_MODEL_COLS = (
    "id, rule_id, subject, version, trained_at, window_start, window_end, kind, threshold, metrics, model, rule_version"
)


_reported: set[int] = set()


def _unusable(model_id: int, why: str) -> None:
    """Log once per model (live scoring looks it up every few seconds until it is retrained)."""
    if model_id not in _reported:
        _reported.add(model_id)
        log.warning("%s", why)


def _stored(row: tuple[Any, ...]) -> StoredModel | None:
    """The stored version, or None when its bytes are not a model this code can use (one trained before
    issue 15's calibration: it is treated as untrained, so the retraining job trains a new version)."""
    import joblib

    id_, rule_id, subject, version, trained_at, start, end, kind, threshold, metrics, blob, rule_version = row
    try:
        model = joblib.load(io.BytesIO(blob))
    except Exception as exc:  # unpickling runs arbitrary code paths: any failure means "not usable"
        _unusable(id_, f"anomaly model {id_} (rule {rule_id} {subject} v{version}) cannot be loaded: {exc}")
        return None
    if not isinstance(model, AnomalyModel) or not isinstance(getattr(model, "features", None), FeatureMap):
        _unusable(id_, f"anomaly model {id_} (rule {rule_id} {subject} v{version}) is of an older format: retrain")
        return None
    return StoredModel(
        id_, rule_id, subject, version, trained_at, start, end, kind, threshold, metrics, model, rule_version
    )


def latest_models(conn: psycopg.Connection, rule_id: int) -> dict[str, StoredModel]:
    """The newest version per subject of a rule that is not stale (see :func:`mark_stale`) and can be loaded."""
    rows = conn.execute(
        f"""SELECT DISTINCT ON (subject) {_MODEL_COLS} FROM anomaly_models WHERE rule_id = %s AND stale_at IS NULL
            ORDER BY subject, version DESC""",
        (rule_id,),
    ).fetchall()
    return {r[2]: m for r in rows if (m := _stored(r)) is not None}


def model_history(conn: psycopg.Connection, rule_id: int) -> list[dict[str, Any]]:
    """Every stored version (without the model bytes), newest first; ``stale_at`` set: no longer used.

    ``metrics`` is the model card: features, components, training and calibration rows, threshold,
    achieved (held-out) false-alarm rate, selection scores, windows and what was left out of them.
    """
    rows = conn.execute(
        """SELECT id, rule_id, subject, version, rule_version, trained_at, trained_by, window_start, window_end, kind,
                  threshold, metrics, stale_at, stale_reason
           FROM anomaly_models WHERE rule_id = %s ORDER BY trained_at DESC, subject""",
        (rule_id,),
    ).fetchall()
    keys = (
        "id",
        "rule_id",
        "subject",
        "version",
        "rule_version",
        "trained_at",
        "trained_by",
        "window_start",
        "window_end",
        "kind",
        "threshold",
        "metrics",
        "stale_at",
        "stale_reason",
    )
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _alarm_floor(rule: Rule) -> float:
    """The least severe numeric level of the rule: rows scoring at least this may open an alarm."""
    nums = [t for lv in rule.spec.condition.levels if isinstance(t := getattr(lv, "threshold", None), float)]
    return min(nums) if nums else 1.0


class AnomalyScorer:
    """Live scoring for :class:`rules.service.RuleEvaluator`; caches the newest model per subject.

    After :meth:`score`, :attr:`explanations` holds, for each scored row at or above its rule's least
    severe level, which tags drove its score: ``(rule_id, device_id, ts_ms) → explanation JSON``.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[int, str], StoredModel] = {}
        self.explanations: dict[tuple[int, int, int], dict[str, Any]] = {}

    def sync(self, conn: psycopg.Connection, rules: Iterable[Rule]) -> None:
        """Load models whose newest version changed (cheap when nothing did)."""
        ids = [r.id for r in rules]
        if not ids:
            self._models = {}
            return
        newest = conn.execute(
            "SELECT rule_id, subject, max(version) FROM anomaly_models WHERE rule_id = ANY(%s) AND stale_at IS NULL"
            " GROUP BY 1, 2",
            (ids,),
        ).fetchall()
        keep: dict[tuple[int, str], StoredModel] = {}
        stale: list[int] = []
        for rule_id, subject, version in newest:
            have = self._models.get((rule_id, subject))
            if have is not None and have.version == version:
                keep[(rule_id, subject)] = have
            else:
                stale.append(rule_id)
        for rule_id in set(stale):
            for subject, m in latest_models(conn, rule_id).items():
                keep[(rule_id, subject)] = m
        self._models = keep

    def score(
        self,
        conn: psycopg.Connection,
        rules: Sequence[Rule],
        devices: dict[int, DeviceInfo | None],
        batch: Sequence[Reading],
    ) -> list[Score]:
        """Score every complete vector that ``batch`` completes, for each anomaly rule watching its tags.

        Rows still warming up (their window is not full) get no score: they are neither stored nor evaluated.
        """
        self.explanations = {}
        seen: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)  # (device, ts) → tag → value
        for r in batch:
            if r.quality == 0:
                seen[(r.device_id, r.ts_ms)][r.tag] = r.value
        todo: list[tuple[Rule, StoredModel, int, int]] = []
        need: set[tuple[int, int]] = set()
        watched: set[str] = set()  # every tag of these rules
        for rule in rules:
            cond = rule.spec.condition
            assert isinstance(cond, Anomaly)
            tags = set(cond.tags)
            watched |= tags
            for (device_id, ts), vals in seen.items():
                device = devices.get(device_id)
                if device is None or tags.isdisjoint(vals) or not rule.spec.scope.matches(device):
                    continue
                model = self._models.get((rule.id, subject_of(cond, device)))
                if model is None:
                    continue  # not trained yet: `fieldwatch rules train` (logged by the trainer)
                todo.append((rule, model, device_id, ts))
                if not tags <= vals.keys() and not model.model.window_s:
                    need.add((device_id, ts))
        if need:  # tags of this timestamp committed by an earlier batch
            all_tags = sorted(watched)
            rows = conn.execute(
                """SELECT s.device_id, (extract(epoch FROM t.time) * 1000)::bigint, s.tag, t.value
                   FROM telemetry t JOIN series s ON s.id = t.series_id
                   WHERE s.device_id = ANY(%s) AND s.tag = ANY(%s) AND t.time = ANY(%s) AND t.quality = 0""",
                (sorted({d for d, _ in need}), all_tags, sorted({_dt(ts) for _, ts in need})),
            ).fetchall()
            for d, ts, tag, v in rows:
                if (d, int(ts)) in need:
                    seen[(d, int(ts))].setdefault(tag, float(v))
        # (model, device) → the rule and the timestamps to score
        groups: dict[tuple[int, int], tuple[Rule, StoredModel, list[int]]] = {}
        for rule, model, device_id, ts in todo:
            if model.model.window_s or all(t in seen[(device_id, ts)] for t in model.model.tags):
                groups.setdefault((id(model), device_id), (rule, model, []))[2].append(ts)
        out: list[Score] = []
        for (_, device_id), (rule, model, stamps) in groups.items():
            out.extend(self._score_device(conn, rule, model, device_id, sorted(set(stamps)), seen))
        return out

    def _score_device(
        self,
        conn: psycopg.Connection,
        rule: Rule,
        model: StoredModel,
        device_id: int,
        stamps: list[int],
        seen: dict[tuple[int, int], dict[str, float]],
    ) -> list[Score]:
        m = model.model
        if m.window_s:  # the window of history before the first row: the same rows as a backtest reads
            keys, x = load_vectors(conn, [device_id], m.tags, stamps[0] - math.ceil(m.window_s * 1000), stamps[-1] + 1)
            ts = np.array([k[1] for k in keys], dtype=np.int64)
        else:
            ts = np.array(stamps, dtype=np.int64)
            x = np.array([[seen[(device_id, t)][tag] for tag in m.tags] for t in stamps], dtype=float)
        if not len(ts):
            return []
        normalized = model.normalized(x, ts)
        wanted = set(stamps)
        floor = _alarm_floor(rule)
        out: list[Score] = []
        loud: list[int] = []
        for i, (t, s) in enumerate(zip(ts.tolist(), normalized.tolist(), strict=True)):
            if t in wanted and math.isfinite(s):
                out.append((rule, device_id, t, s))
                if s >= floor:
                    loud.append(i)
        if loud:
            for i, e in zip(loud, explain(m, ts, x, loud), strict=True):
                if e is not None:
                    self.explanations[(rule.id, device_id, int(ts[i]))] = {
                        **e.as_json(),
                        "model": {"id": model.id, "version": model.version, "kind": model.kind},
                    }
        return out


def store_scores(conn: psycopg.Connection, scores: Sequence[Score]) -> int:
    """Write scores as telemetry of the series ``<rule tag>`` (``anomaly_score:<rule name>``), unit ''."""
    if not scores:
        return 0
    pairs = sorted({(d, rule.spec.tag) for rule, d, _, _ in scores})
    conn.execute(
        """INSERT INTO series (device_id, tag, unit) SELECT d, t, '' FROM unnest(%s::int[], %s::text[]) AS k(d, t)
           ON CONFLICT (device_id, tag) DO NOTHING""",
        ([d for d, _ in pairs], [t for _, t in pairs]),
    )
    ids = {
        (d, t): i
        for i, d, t in conn.execute(
            """SELECT s.id, s.device_id, s.tag FROM series s JOIN unnest(%s::int[], %s::text[]) AS k(d, t)
               ON s.device_id = k.d AND s.tag = k.t""",
            ([d for d, _ in pairs], [t for _, t in pairs]),
        ).fetchall()
    }
    sids = [ids[(d, rule.spec.tag)] for rule, d, _, _ in scores]
    cur = conn.execute(
        """INSERT INTO telemetry (series_id, time, value, quality)
           SELECT * FROM unnest(%s::int[], %s::timestamptz[], %s::float8[], %s::int2[])
           ON CONFLICT DO NOTHING""",
        (sids, [_dt(ts) for _, _, ts, _ in scores], [s for *_, s in scores], [0] * len(scores)),
    )
    return cur.rowcount


#: Definition fields a model depends on (``rules apply`` diff paths): changing one makes the models stale.
TRAINING_FIELDS = (
    "condition.kind",
    "condition.tags",
    "condition.features",
    "condition.window_s",
    "condition.training",
    "condition.target_far",
    "condition.grouping",
    "condition.models",
    "scope",
)


def training_changes(changed_paths: Iterable[str]) -> list[str]:
    """The changed paths (``condition.training.start`` …) that invalidate a trained model."""
    return [p for p in changed_paths if any(p == f or p.startswith(f + ".") for f in TRAINING_FIELDS)]


def mark_stale(conn: psycopg.Connection, rule_id: int, reason: str) -> int:
    """Retire every live model version of a rule (they stop scoring at once); returns how many."""
    return conn.execute(
        "UPDATE anomaly_models SET stale_at = now(), stale_reason = %s WHERE rule_id = %s AND stale_at IS NULL",
        (reason, rule_id),
    ).rowcount


def due_subjects(rule: Rule, latest: dict[str, StoredModel], in_scope: Iterable[str], now_ms: int) -> list[str]:
    """Subjects to train now: in scope without a live model (a new device, a stale model), or with a
    ``last_days`` window whose model is older than ``retrain_every_h`` — each device on its own clock."""
    cond = rule.spec.condition
    assert isinstance(cond, Anomaly)
    rolling = cond.training.last_days is not None and cond.retrain_every_h is not None
    out = []
    for subject in sorted(in_scope):
        m = latest.get(subject)
        hours = cond.retrain_every_h or 0.0
        if m is None or (rolling and now_ms - _ms(m.trained_at) >= hours * 3_600_000):
            out.append(subject)
    return out


def due_for_training(rule: Rule, latest: dict[str, StoredModel], now_ms: int) -> bool:
    """Untrained, or a ``last_days`` window whose newest model is older than ``retrain_every_h``."""
    return bool(due_subjects(rule, latest, latest.keys() or ["*"], now_ms))


def retrain_job(db_url: str, *, now_ms: int | None = None) -> int:
    """Scheduler entry point: train every subject of every enabled anomaly rule that is due; returns models stored."""
    from rules.store import list_rules

    now = int(time.time() * 1000) if now_ms is None else now_ms
    stored = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        for rule in list_rules(conn, enabled_only=True):
            if not isinstance(rule.spec.condition, Anomaly):
                continue
            due = due_subjects(rule, latest_models(conn, rule.id), _subjects(conn, rule.spec), now)
            if due:
                stored += len(train_rule(conn, rule, now_ms=now, subjects=due).trained)
    return stored
