"""Anomaly rules against PostgreSQL: train and version models, score live vectors, store scores.

The pure model work is :mod:`rules.anomaly`; this module is its I/O shell:

* :func:`train_rule` — loads the known-good window of the rule's tags (vectors of readings taken at
  the same timestamp), trains per *subject* (``device:ID``, or ``model:EQUIPMENT_MODEL`` pooled over
  its devices), and stores a new version in ``anomaly_models`` (joblib bytes, threshold, metrics);
* :class:`AnomalyScorer` — used by :class:`rules.service.RuleEvaluator`: turns committed readings
  into vectors (the batch first, the database for tags committed in earlier batches), scores them
  with the newest model of the subject, in multiples of its calibrated threshold;
* :func:`store_scores` — writes scores as ordinary telemetry (series ``anomaly_score:<rule>``,
  unit ``''``) so they can be charted like any tag;
* :func:`retrain_job` — the scheduled retraining.

Scores then go through the one state machine like any reading: ``levels`` compare the normalized
score (``1.0`` = the calibrated threshold), ``for_s``/``count`` gate the start.
"""

from __future__ import annotations

import io
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from rules.anomaly import AnomalyModel, AnomalyTrainingError, train
from rules.model import Anomaly, DeviceInfo, Reading, Rule, RuleSpec

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: (rule, device_id, ts_ms, normalized score)
Score = tuple[Rule, int, int, float]


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def subject_of(cond: Anomaly, device: DeviceInfo) -> str:
    """Which model scores ``device``: its own, or its equipment model's."""
    return f"device:{device.id}" if cond.grouping == "device" else f"model:{device.equipment_model}"


def training_window(cond: Anomaly, now_ms: int) -> tuple[int, int]:
    """``[start, end)`` of the known-good window in epoch ms."""
    t = cond.training
    if t.last_days is not None:
        return now_ms - round(t.last_days * DAY_MS), now_ms
    assert t.start is not None and t.end is not None
    return _ms(t.start if t.start.tzinfo else t.start.replace(tzinfo=UTC)), _ms(
        t.end if t.end.tzinfo else t.end.replace(tzinfo=UTC)
    )


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

    def normalized(self, x: np.ndarray) -> np.ndarray:
        """Scores in multiples of the calibrated threshold (``> 1`` is beyond the target false-alarm rate)."""
        return self.model.score(x) / self.threshold


@dataclass
class TrainingReport:
    """What :func:`train_rule` stored, and which subjects could not be trained (and why)."""

    trained: list[StoredModel] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _subjects(conn: psycopg.Connection, spec: RuleSpec) -> dict[str, list[int]]:
    from rules.devices import load_devices

    cond = spec.condition
    assert isinstance(cond, Anomaly)
    ids = [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id").fetchall()]
    out: dict[str, list[int]] = defaultdict(list)
    for dev in load_devices(conn, ids).values():
        if spec.scope.matches(dev):
            out[subject_of(cond, dev)].append(dev.id)
    return dict(out)


def fit(conn: psycopg.Connection, spec: RuleSpec, device_ids: Sequence[int], now_ms: int) -> AnomalyModel:
    """Train (not store) a model for ``spec`` on the known-good window of ``device_ids``."""
    cond = spec.condition
    assert isinstance(cond, Anomaly)
    start, end = training_window(cond, now_ms)
    _, x = load_vectors(conn, device_ids, cond.tags, start, end)
    model = train(cond.tags, x, target_far=cond.target_far, kinds=tuple(cond.models))
    if model.threshold <= 0:
        raise AnomalyTrainingError("the calibrated threshold is not positive: the known-good data is degenerate")
    return model


def train_rule(
    conn: psycopg.Connection, rule: Rule, *, now_ms: int | None = None, author: str = "scheduler"
) -> TrainingReport:
    """Train every subject of an anomaly rule and store each as a new version."""
    cond = rule.spec.condition
    if not isinstance(cond, Anomaly):
        raise AnomalyTrainingError(f"rule {rule.name!r} is a {cond.kind} rule, not an anomaly rule")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    start, end = training_window(cond, now)
    report = TrainingReport()
    subjects = _subjects(conn, rule.spec)
    if not subjects:
        report.failed["*"] = "no device is in the rule's scope"
    for subject, devices in sorted(subjects.items()):
        try:
            model = fit(conn, rule.spec, devices, now)
        except AnomalyTrainingError as exc:
            report.failed[subject] = f"{exc} (window {_dt(start).isoformat()} – {_dt(end).isoformat()})"
            log.warning("anomaly rule %r %s: %s", rule.name, subject, report.failed[subject])
            continue
        import joblib

        buf = io.BytesIO()
        joblib.dump(model, buf)
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
                    _dt(start),
                    _dt(end),
                    model.kind,
                    list(cond.tags),
                    model.threshold,
                    Jsonb(model.metrics),
                    buf.getvalue(),
                    rule.id,
                    subject,
                ),
            ).fetchone()
        assert row is not None
        report.trained.append(
            StoredModel(
                row[0],
                rule.id,
                subject,
                row[1],
                row[2],
                _dt(start),
                _dt(end),
                model.kind,
                model.threshold,
                model.metrics,
                model,
                rule.version,
            )
        )
    return report


_MODEL_COLS = (
    "id, rule_id, subject, version, trained_at, window_start, window_end, kind, threshold, metrics, model, rule_version"
)


def _stored(row: tuple[Any, ...]) -> StoredModel:
    import joblib

    id_, rule_id, subject, version, trained_at, start, end, kind, threshold, metrics, blob, rule_version = row
    model = joblib.load(io.BytesIO(blob))
    return StoredModel(
        id_, rule_id, subject, version, trained_at, start, end, kind, threshold, metrics, model, rule_version
    )


def latest_models(conn: psycopg.Connection, rule_id: int) -> dict[str, StoredModel]:
    """The newest version per subject of a rule that is not stale (see :func:`mark_stale`)."""
    rows = conn.execute(
        f"""SELECT DISTINCT ON (subject) {_MODEL_COLS} FROM anomaly_models WHERE rule_id = %s AND stale_at IS NULL
            ORDER BY subject, version DESC""",
        (rule_id,),
    ).fetchall()
    return {r[2]: _stored(r) for r in rows}


def model_history(conn: psycopg.Connection, rule_id: int) -> list[dict[str, Any]]:
    """Every stored version (without the model bytes), newest first; ``stale_at`` set: no longer used."""
    rows = conn.execute(
        """SELECT id, rule_id, subject, version, rule_version, trained_at, window_start, window_end, kind, threshold,
                  metrics, stale_at, stale_reason
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
        "window_start",
        "window_end",
        "kind",
        "threshold",
        "metrics",
        "stale_at",
        "stale_reason",
    )
    return [dict(zip(keys, r, strict=True)) for r in rows]


class AnomalyScorer:
    """Live scoring for :class:`rules.service.RuleEvaluator`; caches the newest model per subject."""

    def __init__(self) -> None:
        self._models: dict[tuple[int, str], StoredModel] = {}

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
        """Score every complete vector that ``batch`` completes, for each anomaly rule watching its tags."""
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
                if not tags <= vals.keys():
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
        by_model: dict[int, tuple[Rule, StoredModel, list[tuple[int, int]]]] = {}
        for rule, model, device_id, ts in todo:
            vals = seen[(device_id, ts)]
            if all(t in vals for t in model.model.tags):
                by_model.setdefault(id(model), (rule, model, []))[2].append((device_id, ts))
        out: list[Score] = []
        for rule, model, keys in by_model.values():
            x = np.array([[seen[k][t] for t in model.model.tags] for k in keys], dtype=float)
            out.extend((rule, d, ts, float(s)) for (d, ts), s in zip(keys, model.normalized(x), strict=True))
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


def due_for_training(rule: Rule, latest: dict[str, StoredModel], now_ms: int) -> bool:
    """Untrained, or a ``last_days`` window whose newest model is older than ``retrain_every_h``."""
    cond = rule.spec.condition
    assert isinstance(cond, Anomaly)
    if not latest:
        return True
    if cond.training.last_days is None or cond.retrain_every_h is None:
        return False
    oldest = min(_ms(m.trained_at) for m in latest.values())
    return now_ms - oldest >= cond.retrain_every_h * 3_600_000


def retrain_job(db_url: str, *, now_ms: int | None = None) -> int:
    """Scheduler entry point: train every enabled anomaly rule that is due; returns models stored."""
    from rules.store import list_rules

    now = int(time.time() * 1000) if now_ms is None else now_ms
    stored = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        for rule in list_rules(conn, enabled_only=True):
            if isinstance(rule.spec.condition, Anomaly) and due_for_training(rule, latest_models(conn, rule.id), now):
                stored += len(train_rule(conn, rule, now_ms=now).trained)
    return stored
