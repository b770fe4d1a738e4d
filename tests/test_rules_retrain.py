"""Changing what an anomaly model was trained on (tags, window, target false-alarm rate, …) retires the old
model at once and trains a new version for the new rule version — through `rules apply`, the API, or the
scheduled job — while an unchanged or unrelated edit trains nothing. Real database, pump physics data."""

from __future__ import annotations

import io

import joblib
import numpy as np
import psycopg
from typer.testing import CliRunner

from rules import RuleEvaluator, find_rule
from rules.anomaly_rules import latest_models, retrain_job
from rules.cli import app
from rules.rulesfile import apply_plan, load_rules_file, plan
from simulators.pump import MEASUREMENTS
from tests.support.anomaly import T0, pump_run, scores, store
from tests.support.api import BASE, api_client, auth, token
from tests.support.points import Point

H = 3_600_000
WINDOW = '{start: "2023-11-14T22:13:20Z", end: "2023-11-15T00:13:20Z"}'  # T0 … T0 + 2 h


def rule_yaml(tags: tuple[str, ...], *, window: str = WINDOW, target_far: float = 0.01, for_s: int = 30) -> str:
    return f"""
- name: pump health
  condition:
    kind: anomaly
    tags: [{", ".join(tags)}]
    features: [level]
    training: {window}
    target_far: {target_far}
  for_s: {for_s}
  count: 3
  scope: {{equipment_models: [P100]}}
  problem_code: PUMP_ANOMALY
"""


def seed_device(url: str) -> int:
    """A pump with 2 h of healthy history (the training window) stored as ingest would have."""
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
    store(url, device, pump_run(seed=1, start_ms=T0, seconds=2 * 3600))
    return device


def feed(url: str, device: int, ev: RuleEvaluator, start_ms: int, seed: int) -> list[tuple[int, dict]]:
    """10 min of healthy readings, committed and then evaluated live (one batch)."""
    run = pump_run(seed=seed, start_ms=start_ms, seconds=600)
    store(url, device, run)
    ev.process([Point(device, tag, ts, r[tag]) for ts, r in run for tag in MEASUREMENTS])
    return run


def model_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, rule_version, tags, stale_at IS NOT NULL, stale_reason"
            " FROM anomaly_models ORDER BY version"
        ).fetchall()


def expected_scores(url: str, device: int, run: list[tuple[int, dict]]) -> np.ndarray:
    """What the live model of the rule gives on ``run`` (its own tags, its own threshold)."""
    with psycopg.connect(url) as conn:
        (m,) = latest_models(conn, find_rule(conn, "pump health").id).values()
    return m.normalized(np.array([[r[t] for t in m.model.tags] for _, r in run], dtype=float))


def test_apply_with_new_tags_retires_the_old_model_and_scores_with_a_new_one(db_url: str, monkeypatch) -> None:
    """`rules apply` v1 trains m1 on its 3 tags; v2 with 5 tags marks m1 stale and trains m2 for rule v2, and
    live scores switch to m2; applying v2 again, or a change of for_s only, trains nothing."""
    device = seed_device(db_url)
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    runner = CliRunner()

    def apply(text: str, tmp: str) -> str:
        path = f"/tmp/fw-retrain-{device}-{tmp}.yaml"
        with open(path, "w") as f:
            f.write(text)
        res = runner.invoke(app, ["apply", path, "--yes", "--author", "ann"])
        assert res.exit_code == 0, res.output
        return res.output

    out = apply(rule_yaml(MEASUREMENTS[:3]), "v1")
    assert "applied pump health v1" in out and "model v1" in out and "rule v1" in out
    assert model_rows(db_url) == [(1, 1, list(MEASUREMENTS[:3]), False, None)]

    with RuleEvaluator(db_url) as ev:
        first = feed(db_url, device, ev, T0 + 3 * H, seed=5)
        got = scores(db_url, device, T0 + 3 * H, T0 + 4 * H)
        assert len(got) == len(first) and np.allclose(got, expected_scores(db_url, device, first))

        out = apply(rule_yaml(MEASUREMENTS), "v2")
        assert "applied pump health v2" in out and "model v2" in out and "rule v2" in out
        rows = model_rows(db_url)
        assert [r[:4] for r in rows] == [(1, 1, list(MEASUREMENTS[:3]), True), (2, 2, list(MEASUREMENTS), False)]
        assert "condition.tags" in rows[0][4]

        ev.refresh()  # the evaluator would notice the new rule version within refresh_s anyway
        second = feed(db_url, device, ev, T0 + 4 * H, seed=6)
        got = scores(db_url, device, T0 + 4 * H, T0 + 5 * H)
        assert len(got) == len(second)
        from_m2 = expected_scores(db_url, device, second)
        assert np.allclose(got, from_m2)
        with psycopg.connect(db_url) as conn:  # and not what the retired 3-tag model would have said
            (blob,) = conn.execute("SELECT model FROM anomaly_models WHERE version = 1").fetchone()
            (threshold,) = conn.execute("SELECT threshold FROM anomaly_models WHERE version = 1").fetchone()
        m1 = joblib.load(io.BytesIO(blob))
        from_m1 = m1.score(np.array([[r[t] for t in m1.tags] for _, r in second], dtype=float)) / threshold
        assert not np.allclose(got, from_m1)

    unchanged = runner.invoke(app, ["apply", f"/tmp/fw-retrain-{device}-v2.yaml", "--yes"])
    assert unchanged.exit_code == 0 and "Nothing to apply" in unchanged.output
    out = apply(rule_yaml(MEASUREMENTS, for_s=60), "v3")  # an alarm-side edit: the model still fits
    assert "applied pump health v3" in out and "trained" not in out
    assert [r[:4] for r in model_rows(db_url)] == [
        (1, 1, list(MEASUREMENTS[:3]), True),
        (2, 2, list(MEASUREMENTS), False),
    ]


def test_a_stale_model_stops_scoring_until_the_scheduled_job_trains_the_new_definition(db_url: str) -> None:
    """Applied without retraining (a library caller), a changed window leaves the rule unscored — the stale
    model is not used — and the `rules.anomaly_retrain` job trains the new version on its next run."""
    device = seed_device(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        apply_plan(conn, plan(conn, load_rules_file(rule_yaml(MEASUREMENTS))), author="t")
    assert retrain_job(db_url) == 1
    shorter = '{start: "2023-11-14T22:13:20Z", end: "2023-11-14T23:43:20Z"}'  # 1.5 h instead of 2 h
    with psycopg.connect(db_url, autocommit=True) as conn:
        apply_plan(conn, plan(conn, load_rules_file(rule_yaml(MEASUREMENTS, window=shorter))), author="t")
        assert latest_models(conn, find_rule(conn, "pump health").id) == {}
    assert [r[:2] + r[3:4] for r in model_rows(db_url)] == [(1, 1, True)]
    with RuleEvaluator(db_url) as ev:
        feed(db_url, device, ev, T0 + 3 * H, seed=5)
        assert len(scores(db_url, device, T0 + 3 * H, T0 + 4 * H)) == 0  # nothing scores with the stale model
        assert retrain_job(db_url) == 1
        assert retrain_job(db_url) == 0
        ev.refresh()
        run = feed(db_url, device, ev, T0 + 4 * H, seed=6)
        assert np.allclose(scores(db_url, device, T0 + 4 * H, T0 + 5 * H), expected_scores(db_url, device, run))
    rows = model_rows(db_url)
    assert [r[:2] + r[3:4] for r in rows] == [(1, 1, True), (2, 2, False)]
    with psycopg.connect(db_url) as conn:
        (end,) = conn.execute("SELECT window_end FROM anomaly_models WHERE version = 2").fetchone()
    assert round(end.timestamp() * 1000) == T0 + 90 * 60_000


def test_api_apply_retrains_a_changed_target_and_reports_it(db_url: str) -> None:
    """POST /rules/apply with a new target_far answers with the new model (linked to rule v2); the model
    history shows v1 stale with the reason; a dry run trains nothing."""
    seed_device(db_url)
    eng = auth(token(db_url, "reliability_engineer"))
    import yaml

    with api_client(db_url) as api:
        body = api.post(
            f"{BASE}/rules/apply", headers=eng, json={"rules": yaml.safe_load(rule_yaml(MEASUREMENTS))}
        ).json()
        assert body["applied"] == {"pump health": 1}
        assert [m["version"] for m in body["trained"]["pump health"]["trained"]] == [1]
        changed = {"rules": yaml.safe_load(rule_yaml(MEASUREMENTS, target_far=0.02))}
        dry = api.post(f"{BASE}/rules/apply", headers=eng, json={**changed, "dry_run": True}).json()
        assert dry["applied"] == {} and dry["trained"] == {}
        body = api.post(f"{BASE}/rules/apply", headers=eng, json=changed).json()
        assert body["applied"] == {"pump health": 2}
        (m2,) = body["trained"]["pump health"]["trained"]
        assert (m2["version"], m2["rule_version"], m2["metrics"]["target_far"]) == (2, 2, 0.02)
        assert body["trained"]["pump health"]["failed"] == {}
        history = api.get(f"{BASE}/rules/pump health/models", headers=eng).json()
    assert [(h["version"], h["stale_at"] is not None) for h in history] == [(2, False), (1, True)]
    assert "condition.target_far" in history[1]["stale_reason"]
