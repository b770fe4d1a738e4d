"""Anomaly rules a reliability engineer can trust, end to end in PostgreSQL: training per device inside one rule,
known alarm/maintenance/ticket periods left out of training, warm-up that never alarms (live and backtest), the
model card in the CLI and API, and alarms that say why — held from dispatch until the rule is validated."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg
from typer.testing import CliRunner

from rules import RuleEvaluator, find_rule
from rules.anomaly_rules import latest_models, retrain_job, train_rule
from rules.cli import app
from rules.rulesfile import apply_plan, load_rules_file, plan
from rules.workbench import run_backtest
from simulators.pump import MEASUREMENTS, PumpModel
from tests.support.anomaly import STEP_S, T0, pump_run, store
from tests.support.api import BASE, api_client, auth, token
from tests.support.points import Point
from ticketing import TicketingService, create_technician, ensure_skill

H = 3_600_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def seed(url: str, *keys: str, rules: str) -> dict[str, int]:
    """A gold client's site with P100 pumps ``keys``, the pump skill, one technician nearby, and ``rules`` applied."""
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_skill(conn, "pump")
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude)"
            " VALUES (%s, 'plant', 'P', 48.1374, 11.5755) RETURNING id",
            (client,),
        ).fetchone()[0]
        devices = {
            k: conn.execute(
                "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, %s, 'P100') RETURNING id", (site, k)
            ).fetchone()[0]
            for k in keys
        }
        create_technician(conn, name="Ana", email="ana@x", home_lat=48.15, home_lon=11.58, skills={"pump": 3})
        apply_plan(conn, plan(conn, load_rules_file(rules)), author="test")
    return devices


def live(url: str, device: int, run: list[tuple[int, dict]], ev: RuleEvaluator, tags=MEASUREMENTS) -> None:
    """Commit readings, then evaluate them in batches of 40 timestamps, as the ingest hook would."""
    store(url, device, run)
    for i in range(0, len(run), 40):
        ev.process([Point(device, t, ts, r[t]) for ts, r in run[i : i + 40] for t in tags])


def alarm_rows(url: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT id, device_id, triggered_at, cleared_at, message, explanation, auto_dispatch"
            " FROM alarms ORDER BY id"
        )
        names = [c.name for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


FLEET = """
- name: fleet health
  condition:
    kind: anomaly
    tags: [flow, discharge_pressure, motor_current, bearing_temp, vibration]
    models: [pca]
    training:
      first_days: 0.125                # each pump's first 3 h of data …
      devices:                         # … except pump-2, whose first hours were a fault
        pump-2: {start: "2023-11-15T08:13:20Z", end: "2023-11-15T11:13:20Z"}
  scope: {equipment_models: [P100]}
  problem_code: PUMP_ANOMALY
"""


def test_one_rule_trains_each_device_on_its_own_window_and_retrains_them_one_by_one(db_url: str, monkeypatch) -> None:
    """One rule over three pumps: pump-1 on its first 3 h, pump-2 on its own window, pump-3 (no data yet) reported;
    `rules train --device` retrains one pump, the job trains pump-3 once its data exists, and the cards, the model
    list and validation are in the API."""
    dev = seed(db_url, "pump-1", "pump-2", "pump-3", rules=FLEET)
    store(db_url, dev["pump-1"], pump_run(seed=1, start_ms=T0, seconds=5 * 3600))
    store(db_url, dev["pump-2"], pump_run(seed=2, start_ms=T0, seconds=2 * 3600, fault_at=0))
    store(db_url, dev["pump-2"], pump_run(seed=3, start_ms=T0 + 10 * H, seconds=3 * 3600))
    now = T0 + 20 * H
    with psycopg.connect(db_url, autocommit=True) as conn:
        rule = find_rule(conn, "fleet health")
        report = train_rule(conn, rule, now_ms=now)
    subjects = {m.subject: m for m in report.trained}
    assert set(subjects) == {f"device:{dev['pump-1']}", f"device:{dev['pump-2']}"}
    assert "has no good readings" in report.failed[f"device:{dev['pump-3']}"]
    w1 = subjects[f"device:{dev['pump-1']}"].metrics["windows"]["pump-1"]
    w2 = subjects[f"device:{dev['pump-2']}"].metrics["windows"]["pump-2"]
    assert (w1["start"], w1["end"]) == (iso(T0 + STEP_S * 1000), iso(T0 + STEP_S * 1000 + 3 * H))
    assert (w2["start"], w2["end"]) == (iso(T0 + 10 * H), iso(T0 + 13 * H))
    assert w2["rows"] == 3 * 3600 // STEP_S - 1  # nothing from its faulty first hours

    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    res = CliRunner().invoke(app, ["train", "fleet health", "--device", "pump-2"])
    assert res.exit_code == 0, res.output
    with psycopg.connect(db_url) as conn:
        versions = dict(conn.execute("SELECT subject, max(version) FROM anomaly_models GROUP BY 1").fetchall())
    assert versions == {f"device:{dev['pump-1']}": 1, f"device:{dev['pump-2']}": 2}

    store(db_url, dev["pump-3"], pump_run(seed=4, start_ms=T0 + 15 * H, seconds=4 * 3600))
    assert retrain_job(db_url, now_ms=now) == 1  # pump-3 only: the others have live models of a fixed window
    with psycopg.connect(db_url) as conn:
        latest = latest_models(conn, find_rule(conn, "fleet health").id)
    assert {s: m.version for s, m in latest.items()} == {
        f"device:{dev['pump-1']}": 1,
        f"device:{dev['pump-2']}": 2,
        f"device:{dev['pump-3']}": 1,
    }

    eng = auth(token(db_url, "reliability_engineer"))
    with api_client(db_url) as api:
        cards = api.get(f"{BASE}/rules/fleet health/models", headers=eng).json()
        card = cards[0]["metrics"]
        for key in ("features", "components", "training_rows", "calibration_rows", "threshold", "holdout_far"):
            assert key in card, key
        assert card["selection"]["candidates"]["pca"]["qualified"] is True
        assert api.get(f"{BASE}/rules/fleet health", headers=eng).json()["auto_dispatch"] is False
        body = api.post(f"{BASE}/rules/fleet health/validate", headers=eng).json()
        assert (body["auto_dispatch"], body["version"]) == (True, 2)
        versions = api.get(f"{BASE}/rules/fleet health", headers=eng).json()["versions"]
        assert versions[-1]["definition"]["validated"] is True


def test_training_leaves_out_known_alarm_maintenance_and_ticket_periods(db_url: str) -> None:
    """Bearing wear during a maintenance window, another rule's alarm and a ticket inside the training window are
    left out (listed on the card with why); trained without them, the model flags the same wear later."""
    rules = """
- name: pump health
  condition:
    kind: anomaly
    tags: [flow, discharge_pressure, motor_current, bearing_temp, vibration]
    models: [pca]
    training: {start: "2023-11-14T22:13:20Z", end: "2023-11-15T04:13:20Z", screen: false}
  scope: {equipment_models: [P100]}
  problem_code: PUMP_ANOMALY
- name: hot bearing
  tag: bearing_temp
  condition: {kind: above, threshold: 200}
  problem_code: HOT
"""
    dev = seed(db_url, "pump-1", rules=rules)["pump-1"]
    pump, run = PumpModel(5), []
    for t in range(0, 6 * 3600, STEP_S):
        if t == 2 * 3600:
            pump.inject_fault("bearing_wear", rate=0.05)
        if t == 2 * 3600 + 1800:
            pump.clear_fault()
        r = pump.step(float(t))
        if t:
            run.append((T0 + t * 1000, r))
    store(db_url, dev, run)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO silences (kind, device_id, starts_at, ends_at, reason, created_by)"
            " VALUES ('maintenance', %s, %s, %s, 'bearing change', 'ann')",
            (dev, datetime.fromtimestamp((T0 + 2 * H) / 1000, UTC), datetime.fromtimestamp((T0 + 3 * H) / 1000, UTC)),
        )
        hot = find_rule(conn, "hot bearing").id
        conn.execute(
            "INSERT INTO alarms (rule_id, device_id, severity, triggered_at, cleared_at, state)"
            " VALUES (%s, %s, 'major', %s, %s, 'cleared')",
            (
                hot,
                dev,
                datetime.fromtimestamp((T0 + 4 * H) / 1000, UTC),
                datetime.fromtimestamp((T0 + 4 * H + 600_000) / 1000, UTC),
            ),
        )
        conn.execute(
            "INSERT INTO tickets (device_id, problem_code, title, status, created_at, updated_at)"
            " VALUES (%s, 'NOISE', 'noisy', 'resolved', %s, %s)",
            (
                dev,
                datetime.fromtimestamp((T0 + 5 * H) / 1000, UTC),
                datetime.fromtimestamp((T0 + 5 * H + 600_000) / 1000, UTC),
            ),
        )
        (m,) = train_rule(conn, find_rule(conn, "pump health")).trained
    w = m.metrics["windows"]["pump-1"]
    whys = [e["why"] for e in w["excluded"]]
    assert whys[0].startswith("maintenance window") and whys[1] == "alarm of rule 'hot bearing'"
    assert whys[2].startswith("ticket")
    assert w["excluded_rows"] == (3600 + 600 + 600) // STEP_S
    assert m.metrics["training_rows"] == len(run) - w["excluded_rows"] - m.metrics["warming_up_rows"]
    wear = pump_run(seed=9, start_ms=T0 + 10 * H, seconds=1800, fault_at=600)
    x = np.array([[r[t] for t in m.model.tags] for _, r in wear])
    ts = np.array([t for t, _ in wear], dtype=np.int64)
    assert (m.normalized(x, ts)[-60:] > 1.0).mean() > 0.9


WATCH = """
- name: bearing watch
  condition:
    kind: anomaly
    tags: [bearing_temp]             # one signal, watched through its windowed features
    window_s: 300
    models: [pca]
    training: {start: "2023-11-14T22:13:20Z", end: "2023-11-15T02:13:20Z"}
  scope: {equipment_models: [P100]}
  problem_code: BEARING_ANOMALY
"""


def test_a_single_tag_rule_warms_up_without_alarming_live_and_in_its_backtest(db_url: str) -> None:
    """A stuck bearing sensor from the first reading after a 2 h gap: nothing is scored (so nothing alarms) until the
    5-minute window is full; then the rule alarms, and a backtest of the same stretch gives the same scores and
    the same episode."""
    dev = seed(db_url, "pump-1", rules=WATCH)["pump-1"]
    store(db_url, dev, pump_run(seed=1, start_ms=T0, seconds=4 * 3600))
    with psycopg.connect(db_url, autocommit=True) as conn:
        (m,) = train_rule(conn, find_rule(conn, "bearing watch")).trained
    assert m.metrics["features"] == [f"bearing_temp.{k}" for k in ("level", "spread", "slope", "rate")]
    start = T0 + 6 * H
    run = pump_run(seed=7, start_ms=start, seconds=1800)
    frozen = run[0][1]["bearing_temp"]
    run = [(ts, {**r, "bearing_temp": frozen}) for ts, r in run]
    with RuleEvaluator(db_url) as ev:
        live(db_url, dev, run, ev, tags=("bearing_temp",))
    with psycopg.connect(db_url) as conn:
        scored = conn.execute(
            """SELECT (extract(epoch FROM t.time) * 1000)::bigint, t.value FROM telemetry t
               JOIN series s ON s.id = t.series_id WHERE s.tag = 'anomaly_score:bearing watch' ORDER BY t.time"""
        ).fetchall()
    first = scored[0][0]
    assert first >= start + 240_000  # 80 % of the window, at least
    (alarm,) = alarm_rows(db_url)
    opened = round(alarm["triggered_at"].timestamp() * 1000)
    assert opened >= first
    with psycopg.connect(db_url) as conn:
        result = run_backtest(conn, "bearing watch", "pump-1", start, start + 1800_000)
    assert [r.ts_ms for r in result.rows] == [ts for ts, _ in scored]
    assert np.allclose([r.value for r in result.rows], [v for _, v in scored])
    assert [(e.start_ms, e.end_ms) for e in result.episodes] == [(opened, None)]


HEALTH = """
- name: pump health
  condition:
    kind: anomaly
    tags: [flow, discharge_pressure, motor_current, bearing_temp, vibration]
    models: [pca]
    grouping: equipment_model
    training: {start: "2023-11-14T22:13:20Z", end: "2023-11-15T02:13:20Z"}
  for_s: 30
  count: 3
  scope: {equipment_models: [P100]}
  problem_code: PUMP_ANOMALY
  required_skill: pump
"""


def test_an_anomaly_alarm_says_why_and_waits_for_a_person_until_the_rule_is_validated(db_url: str, monkeypatch) -> None:
    """A new anomaly rule's alarm names the tags that drove it (stored with the alarm, in its message, the ticket's
    title and a ticket note) and its ticket is held, not dispatched, even by the sweep; `rules validate` records a
    new version, and the next alarm is dispatched on its own. `rules models` shows the card."""
    dev = seed(db_url, "pump-1", "pump-2", rules=HEALTH)
    store(db_url, dev["pump-1"], pump_run(seed=1, start_ms=T0, seconds=4 * 3600))
    with psycopg.connect(db_url, autocommit=True) as conn:
        train_rule(conn, find_rule(conn, "pump health"))
    with RuleEvaluator(db_url) as ev:
        live(db_url, dev["pump-1"], pump_run(seed=9, start_ms=T0 + 5 * H, seconds=1800, fault_at=600), ev)
    (alarm,) = alarm_rows(db_url)
    assert alarm["auto_dispatch"] is False
    top = alarm["explanation"]["drivers"][0]
    assert top["tag"] in ("vibration", "bearing_temp") and top["outside"] == "high"
    assert top["value"] > top["normal"][1] and 0 < top["share"] <= 1
    assert top["tag"] in alarm["message"] and "normal" in alarm["message"]

    with TicketingService(db_url) as svc:
        out = svc.handle_alarm(alarm["id"])
        assert out.action == "created" and out.technician_id is None
        svc.sweep()
    with psycopg.connect(db_url) as conn:
        title, reason, status = conn.execute(
            "SELECT title, unassigned_reason, status FROM tickets WHERE id = %s", (out.ticket_id,)
        ).fetchone()
        notes = [r[0] for r in conn.execute("SELECT body FROM ticket_notes WHERE ticket_id = %s", (out.ticket_id,))]
        assigned = conn.execute("SELECT count(*) FROM assignments WHERE ticket_id = %s", (out.ticket_id,)).fetchone()
    assert title == f"pump health on pump-1 — {top['tag']} high"
    assert status == "new" and reason.startswith("held for review: rule 'pump health' is not validated")
    assert assigned == (0,)
    assert len(notes) == 1 and top["tag"] in notes[0] and "look first at" in notes[0]

    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    runner = CliRunner()
    res = runner.invoke(app, ["models", "pump health"])
    assert res.exit_code == 0, res.output
    for text in ("NOT validated", "held-out", "candidate pca", "features", "components", "window pump-1"):
        assert text in res.output, text
    res = runner.invoke(app, ["validate", "pump health", "--author", "ann"])
    assert res.exit_code == 0 and "pump health v2: validated" in res.output
    with psycopg.connect(db_url) as conn:
        author, definition = conn.execute(
            "SELECT author, definition FROM rule_versions ORDER BY rule_id, version DESC LIMIT 1"
        ).fetchone()
    assert author == "ann" and definition["validated"] is True

    with RuleEvaluator(db_url) as ev:
        live(db_url, dev["pump-2"], pump_run(seed=11, start_ms=T0 + 5 * H, seconds=1800, fault_at=600), ev)
    second = alarm_rows(db_url)[1]
    assert second["device_id"] == dev["pump-2"] and second["auto_dispatch"] is True
    with TicketingService(db_url) as svc:
        out2 = svc.handle_alarm(second["id"])
    assert out2.technician_id is not None


def test_a_model_stored_before_the_new_calibration_is_retrained_not_used(db_url: str) -> None:
    """A stored version the code cannot load (an older format) scores nothing; the job trains a new version."""
    dev = seed(db_url, "pump-1", rules=HEALTH)
    store(db_url, dev["pump-1"], pump_run(seed=1, start_ms=T0, seconds=4 * 3600))
    with psycopg.connect(db_url, autocommit=True) as conn:
        rule = find_rule(conn, "pump health")
        conn.execute(
            "INSERT INTO anomaly_models (rule_id, subject, version, rule_version, window_start, window_end, kind, tags,"
            " threshold, model) VALUES (%s, 'model:P100', 1, 1, now(), now(), 'pca', '{flow}', 1.0, '\\x00')",
            (rule.id,),
        )
        assert latest_models(conn, rule.id) == {}
    assert retrain_job(db_url) == 1
    with psycopg.connect(db_url) as conn:
        assert {s: m.version for s, m in latest_models(conn, rule.id).items()} == {"model:P100": 2}
