"""The reliability engineer's workbench: backtest a live rule, an old version or a draft on one device.

Shared by ``fieldwatch rules backtest`` and ``POST /api/v1/rules/{rule}/backtest``. Reads only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psycopg

from rules.anomaly import AnomalyTrainingError
from rules.anomaly_rules import fit, latest_models, load_vectors, subject_of
from rules.backtest import (
    BacktestError,
    Episode,
    History,
    Incident,
    Score,
    Summary,
    episode_dict,
    episodes,
    iso,
    labels_from_tickets,
    load_history,
    replay,
    score,
    summarize,
)
from rules.compile import UnboundThreshold, compile_rule
from rules.devices import UnknownDevice, resolve_device
from rules.model import Anomaly, DeviceInfo, RuleSpec
from rules.replay import Trace
from rules.store import find_rule, get_rule_version


def _anomaly_history(
    conn: psycopg.Connection, spec: RuleSpec, rule_id: int | None, device: DeviceInfo, start_ms: int, end_ms: int
) -> History:
    """Normalized anomaly scores of the device's stored vectors — computed exactly as live evaluation does.

    A stored rule uses its newest trained model for the device's subject; a draft is trained in memory
    on its own known-good data (nothing is stored). Windowed features read the window of history before
    ``start_ms`` too, as live scoring did; rows still warming up get no score (as live: they never alarm).
    """
    cond = spec.condition
    assert isinstance(cond, Anomaly)
    subject = subject_of(cond, device)
    if rule_id is not None:
        stored = latest_models(conn, rule_id).get(subject)
        if stored is None:
            raise BacktestError(
                f"rule {spec.name!r} has no trained model for {subject}: "
                f"run `fieldwatch rules train {spec.name!r}` first"
            )
        model, threshold = stored.model, stored.threshold
    else:
        devices = (
            [device.id]
            if cond.grouping == "device"
            else [
                r[0]
                for r in conn.execute("SELECT id FROM devices WHERE equipment_model = %s", (device.equipment_model,))
            ]
        )
        try:
            model = fit(conn, spec, devices, end_ms)
        except AnomalyTrainingError as exc:
            raise BacktestError(f"draft {spec.name!r}: cannot train its model: {exc}") from None
        threshold = model.threshold
    lead = math.ceil(model.window_s * 1000)
    keys, x = load_vectors(conn, [device.id], list(model.tags), start_ms - lead, end_ms)
    if not keys:
        return History.of([])
    ts = np.fromiter((t for _, t in keys), np.int64, len(keys))
    scores = model.score(x, ts) / threshold  # the whole window at once: one vectorised call, as live scores batches
    keep = (ts >= start_ms) & np.isfinite(scores)  # NaN: the feature window is still warming up
    return History(ts[keep], np.asarray(scores[keep], np.float64), np.zeros(int(keep.sum()), np.int16))


@dataclass(frozen=True)
class BacktestResult:
    rule: str
    version: str  # "3", or "draft"
    device: DeviceInfo
    start_ms: int
    end_ms: int
    readings: int
    episodes: list[Episode]
    summary: Summary
    score: Score | None
    rows: Trace

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "version": self.version,
            "device": {"id": self.device.id, "key": self.device.key, "site": self.device.site},
            "from": iso(self.start_ms),
            "to": iso(self.end_ms),
            "readings": self.readings,
            "episodes": [episode_dict(e) for e in self.episodes],
            "summary": asdict(self.summary),
            "score": None if self.score is None else asdict(self.score),
        }


def run_backtest(
    conn: psycopg.Connection,
    rule_ref: str | int,
    device_ref: str | int,
    start_ms: int,
    end_ms: int,
    *,
    version: int | None = None,
    draft: RuleSpec | None = None,
    incidents: list[Incident] | None = None,
    tickets_as_labels: bool = False,
) -> BacktestResult:
    """Replay one rule (live, ``version``, or an unapplied ``draft``) over a device's stored history."""
    if end_ms <= start_ms:
        raise BacktestError("--to must be after --from")
    if draft is not None:
        spec, label, rule_id = draft, "draft", 0
    else:
        rule = find_rule(conn, rule_ref)
        rule_id = rule.id
        if version is None or version == rule.version:
            spec, label = rule.spec, str(rule.version)
        else:
            spec, label = get_rule_version(conn, rule.id, version), str(version)
    if spec.condition.kind == "no_data":
        raise BacktestError(
            f"rule {spec.name!r} is a no-data rule: it watches silence, which history "
            "replay cannot show; backtest threshold and anomaly rules"
        )
    try:
        device = resolve_device(conn, device_ref)
    except UnknownDevice as exc:
        raise BacktestError(str(exc)) from None
    try:
        compiled = compile_rule(spec, rule_id, device.attributes)
    except UnboundThreshold as exc:
        raise BacktestError(str(exc)) from None
    if isinstance(spec.condition, Anomaly):
        history = _anomaly_history(conn, spec, rule_id if draft is None else None, device, start_ms, end_ms)
    else:
        history = load_history(conn, device.id, spec.tag, start_ms, end_ms)
    rep = replay(compiled, history)
    eps = episodes(rep.events)
    labels = list(incidents or [])
    if tickets_as_labels:
        labels += labels_from_tickets(conn, device.id, spec.problem_code)
    sc = None
    if incidents is not None or tickets_as_labels:
        judged = rep.rows.evaluated  # per reading: the readings the rule looked at, and its alarm after each
        sc = score(eps, labels, start_ms, end_ms, ts=rep.rows.ts[judged], alarmed=rep.rows.alarmed[judged])
    return BacktestResult(
        spec.name, label, device, start_ms, end_ms, len(history), eps, summarize(eps, start_ms, end_ms), sc, rep.rows
    )
