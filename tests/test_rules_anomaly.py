"""Anomaly rules end to end on pump physics stored in PostgreSQL: train and version models, score live
readings into a chartable series and alarms, stay under the false-alarm target on unseen healthy data,
and backtest to the same episodes as live evaluation."""

from __future__ import annotations

import csv
import json

import numpy as np
import psycopg
from typer.testing import CliRunner

from rules import RuleEvaluator, find_rule
from rules.anomaly_rules import due_for_training, latest_models, retrain_job, train_rule
from rules.cli import app
from rules.jobs import rule_jobs
from rules.rulesfile import apply_plan, load_rules_file, plan
from rules.workbench import run_backtest
from simulators.pump import MEASUREMENTS
from tests.support.anomaly import STEP_S, T0, pump_run, scores, store
from tests.support.api import BASE, api_client, auth, token
from tests.support.points import Point

H = 3_600_000
TARGET = 0.01

RULE = f"""
- name: pump health
  condition:
    kind: anomaly
    tags: [{", ".join(MEASUREMENTS)}]
    features: [level]                # readings only: each score is one vector's, so for_s/count filter it
    training: {{start: "2023-11-14T22:13:20Z", end: "2023-11-15T02:13:20Z"}}
    target_far: {TARGET}
  for_s: 30
  count: 3
  scope: {{equipment_models: [P100]}}
  problem_code: PUMP_ANOMALY
"""


def seed(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude)"
            " VALUES (%s, 'plant', 'P', 48, 11) RETURNING id",
            (client,),
        ).fetchone()[0]
        device = conn.execute(
            "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'pump-1', 'P100') RETURNING id", (site,)
        ).fetchone()[0]
        apply_plan(conn, plan(conn, load_rules_file(RULE)), author="test")
    return device


def live(url: str, device: int, run: list[tuple[int, dict]], ev: RuleEvaluator, split: bool = False) -> None:
    """Evaluate committed readings in batches of 40 timestamps; ``split`` sends each vector in two batches."""
    store(url, device, run)
    points = [Point(device, tag, ts, r[tag]) for ts, r in run for tag in MEASUREMENTS]
    if split:  # the first two tags of every vector in one batch, the rest in the next
        for i in range(0, len(run), 40):
            chunk = run[i : i + 40]
            ev.process([Point(device, t, ts, r[t]) for ts, r in chunk for t in MEASUREMENTS[:2]])
            ev.process([Point(device, t, ts, r[t]) for ts, r in chunk for t in MEASUREMENTS[2:]])
        return
    for i in range(0, len(points), 40 * len(MEASUREMENTS)):
        ev.process(points[i : i + 40 * len(MEASUREMENTS)])


def alarms(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return [
            (round(a.timestamp() * 1000), b and round(b.timestamp() * 1000), s)
            for a, b, s in conn.execute(
                "SELECT triggered_at, cleared_at, peak_severity FROM alarms ORDER BY id"
            ).fetchall()
        ]


def test_anomaly_rule_trains_scores_alarms_and_backtests_identically(db_url: str, tmp_path, monkeypatch) -> None:
    """Trained on 4 h of a healthy pump, the rule stays quiet on unseen healthy data, alarms on bearing wear,
    stores its score series, and a backtest of the same window gives the same episodes."""
    device = seed(db_url)
    store(db_url, device, pump_run(seed=1, start_ms=T0, seconds=4 * 3600))
    with psycopg.connect(db_url, autocommit=True) as conn:
        rule = find_rule(conn, "pump health")
        report = train_rule(conn, rule, author="ann")
        assert report.failed == {} and [(m.subject, m.version) for m in report.trained] == [(f"device:{device}", 1)]
        m = report.trained[0]
        assert m.kind in ("residual", "pca", "iforest", "knn") and m.threshold > 0 and m.metrics["target_far"] == TARGET
        # every clean row past its warm-up is fitted on and calibrated on (out of fold): cross-conformal calibration
        ready = 4 * 3600 // STEP_S - 1 - m.metrics["warming_up_rows"]
        assert m.metrics["training_rows"] == m.metrics["calibration_rows"] == ready
        row = conn.execute(
            "SELECT window_start, window_end, trained_by, octet_length(model) FROM anomaly_models"
        ).fetchone()
        assert (round(row[0].timestamp() * 1000), round(row[1].timestamp() * 1000), row[2]) == (T0, T0 + 4 * H, "ann")
        assert row[3] > 100

    healthy_start, fault_start = T0 + 5 * H, T0 + 7 * H
    with RuleEvaluator(db_url) as ev:
        live(db_url, device, pump_run(seed=7, start_ms=healthy_start, seconds=2 * 3600), ev)
        unseen = scores(db_url, device, healthy_start, fault_start)
        warm = int(np.ceil(0.8 * m.model.window_s / STEP_S))  # rows before the spread's window is full
        assert len(unseen) == 2 * 3600 // STEP_S - 1 - warm  # one score per complete vector past its warm-up
        assert np.mean(unseen > 1.0) <= 2 * TARGET
        assert alarms(db_url) == []  # for_s and count absorb the rare single excursions
        # Bearing wear 10 min into a new run; vectors arrive split over two batches.
        live(db_url, device, pump_run(seed=9, start_ms=fault_start, seconds=1800, fault_at=600), ev, split=True)
    opened = alarms(db_url)
    assert len(opened) == 1 and opened[0][1] is None
    assert fault_start + 600_000 < opened[0][0] <= fault_start + 900_000  # within 5 min of the fault

    with psycopg.connect(db_url) as conn:
        result = run_backtest(conn, "pump health", "plant/pump-1", healthy_start, fault_start + 1800_000)
    assert [(e.start_ms, e.end_ms, e.peak_severity) for e in result.episodes] == opened
    stored = scores(db_url, device, healthy_start, fault_start + 1800_000)
    assert np.allclose([r.value for r in result.rows], stored)

    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    out_csv = tmp_path / "rows.csv"
    res = CliRunner().invoke(
        app,
        [
            "backtest",
            "pump health",
            "--device",
            "pump-1",
            "--from",
            str(fault_start),
            "--to",
            str(fault_start + 1800_000),
            "--output",
            str(out_csv),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert len(rows) == 1800 // STEP_S - 1 and float(rows[-1]["score"]) > 1.0 and rows[-1]["state"] == "active"


def test_train_via_cli_and_api_versions_models_and_the_job_trains_when_due(db_url: str, monkeypatch) -> None:
    """`rules train` and POST /rules/{rule}/train each add a model version; the scheduled job trains an
    untrained rule and leaves a fixed window alone; too little data is reported, not hidden."""
    device = seed(db_url)
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    runner = CliRunner()
    empty = runner.invoke(app, ["train", "pump health"])
    assert empty.exit_code == 1 and "widen the training window" in empty.output
    store(db_url, device, pump_run(seed=1, start_ms=T0, seconds=2 * 3600))
    assert "rules.anomaly_retrain" in {j.id for j in rule_jobs()}
    assert retrain_job(db_url) == 1  # untrained → trained
    assert retrain_job(db_url) == 0  # a fixed window is not re-fitted
    res = runner.invoke(app, ["train", "pump health", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["trained"][0]["version"] == 2
    eng = auth(token(db_url, "reliability_engineer"))
    with api_client(db_url) as api:
        body = api.post(f"{BASE}/rules/pump health/train", headers=eng).json()
        assert body["trained"][0]["version"] == 3 and body["failed"] == {}
        history = api.get(f"{BASE}/rules/pump health/models", headers=eng).json()
        assert [h["version"] for h in history] == [3, 2, 1]
        assert api.post(f"{BASE}/rules/nope/train", headers=eng).status_code == 404
    with psycopg.connect(db_url, autocommit=True) as conn:
        rule = find_rule(conn, "pump health")
        latest = latest_models(conn, rule.id)
        assert latest[f"device:{device}"].version == 3
        rolling = rule.spec.model_copy(
            update={
                "condition": rule.spec.condition.model_copy(
                    update={
                        "training": rule.spec.condition.training.model_copy(  # type: ignore[union-attr]
                            update={"start": None, "end": None, "last_days": 7.0}
                        )
                    }
                )
            }
        )
        newest = max(m.trained_at for m in latest.values()).timestamp() * 1000
        rolling_rule = rule.model_copy(update={"spec": rolling})
        assert not due_for_training(rolling_rule, latest, int(newest + 23 * H))
        assert due_for_training(rolling_rule, latest, int(newest + 25 * H))
