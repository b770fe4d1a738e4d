"""Backtests: the same state machine as live evaluation, episodes, summaries and scores against incidents."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from datetime import UTC, datetime

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rules import NORMAL, RuleEvaluator, RuleState, evaluate, evaluate_all, find_rule
from rules.backtest import Episode, Incident, episodes, load_labels, replay, score, summarize
from rules.cli import app
from rules.compile import CLevel, CompiledRule, compile_rule
from rules.engine import signal
from rules.model import SEVERITY_RANK
from rules.rulesfile import apply_plan, load_rules_file, plan
from rules.scoring import point_scores
from rules.workbench import run_backtest
from simulators.pump import PumpModel
from tests.support.points import Point

T0 = 1_700_000_000_000
H = 3_600_000

RULE = """
- name: hot bearing
  tag: bearing_temp
  condition:
    kind: above
    levels:
      - {severity: critical, threshold: 95, clear: 92}
      - {severity: major, threshold: {attribute: bearing_limit, default: 80}, clear: 78}
  for_s: 20
  count: 2
  keep_firing_for_s: 10
  scope: {equipment_models: [P100]}
  problem_code: BEARING
"""


def test_scores_against_incidents() -> None:
    """Precision, recall, F1, false/missed-alarm rates and detection delay follow their definitions on a known case."""
    eps = [Episode(10, 20, 10, "major", None), Episode(50, 60, 50, "major", None), Episode(90, None, 90, "minor", None)]
    incs = [Incident(5, 30), Incident(70, 80), Incident(85, 95)]
    sc = score(eps, incs, 0, 100)
    assert (sc.incidents, sc.detected, sc.true_episodes, sc.false_episodes) == (3, 2, 2, 1)
    assert (sc.precision, sc.recall, sc.missed_alarm_rate) == (0.6667, 0.6667, 0.3333)
    assert sc.f1 == 0.6667
    # Incident-free time: 0-5, 30-70, 80-85, 95-100 = 55 ms; in alarm then: 50-60 and 95-100 = 15 ms.
    assert sc.false_alarm_rate == round(15 / 55, 6)
    assert sc.mean_detection_delay_s == (0.005 + 0.005) / 2
    assert score([], incs, 0, 100).precision is None and score([], incs, 0, 100).recall == 0.0


def test_summary_counts_alerts_per_week_and_time_in_alarm() -> None:
    """An open episode counts until the end of the window; alerts per week scale with the window."""
    week = 7 * 24 * H
    s = summarize([Episode(0, H, 0, "major", None), Episode(week - H, None, 0, "critical", None)], 0, week)
    assert (s.episodes, s.alerts_per_week, s.time_in_alarm_s, s.tickets) == (2, 2.0, 7200.0, 2)
    assert s.by_severity == {"major": 1, "critical": 1}


# --- the vectorised replay is the live state machine ---------------------------------------------------------

VALUES = st.one_of(st.integers(-6, 6).map(float), st.floats(-8, 8, allow_nan=False))


@st.composite
def compiled_rules(draw: st.DrawFn) -> CompiledRule:
    """Any rule the engine can run: every kind, 1-3 rungs, hysteresis or not, durations, counts, keep-firing."""
    kind = draw(st.sampled_from(["above", "below", "outside", "inside", "rate"]))
    sevs = draw(st.lists(st.sampled_from(list(SEVERITY_RANK)), min_size=1, max_size=3, unique=True))
    levels = []
    for sev in sorted(sevs, key=SEVERITY_RANK.__getitem__):  # most severe first, as compile_rule orders them
        a = draw(st.integers(-5, 5).map(float))
        b = a + draw(st.integers(0, 6))
        ca, cb = (a, b) if draw(st.booleans()) else (a + draw(st.integers(-2, 2)), b + draw(st.integers(-2, 2)))
        levels.append(CLevel(sev, SEVERITY_RANK[sev], a, b, ca, cb))
    return CompiledRule(
        rule_id=1,
        kind=kind,
        levels=tuple(levels),
        for_ms=draw(st.sampled_from([0, 1000, 3000, 10_000])),
        count=draw(st.integers(1, 3)),
        keep_ms=draw(st.sampled_from([0, 2000, 5000])),
        inclusive=draw(st.booleans()),
        direction=draw(st.sampled_from(["rise", "fall", "either"])),
        per_s=draw(st.sampled_from([1.0, 60.0])),
    )


READINGS = st.lists(
    st.tuples(st.integers(0, 40).map(lambda s: T0 + s * 1000), VALUES, st.sampled_from([0, 0, 0, 0, 1])),
    max_size=60,
)


def fold(rule: CompiledRule, state: RuleState, readings: list) -> list[tuple]:
    """Per reading in time order, what :func:`evaluate` one at a time gives: (time, value, signal, phase, severity)."""
    out = []
    for ts, value, quality in sorted(readings, key=lambda r: r[0]):
        looked = quality == 0 and (state.last_ts_ms is None or ts > state.last_ts_ms)
        sig = signal(rule, state, ts, value) if looked else None
        state, _ = evaluate(rule, state, ts, value, quality)
        out.append((ts, value, sig, state.phase, state.severity if state.phase == "active" else None))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=compiled_rules(), before=READINGS, readings=READINGS)
def test_vectorised_replay_is_the_live_state_machine(rule: CompiledRule, before: list, readings: list) -> None:
    """Over random rules, start states and readings (unordered, repeated times, bad quality), the backtest replay
    gives exactly the events, final state and per-reading states of evaluating one reading at a time."""
    state, _ = evaluate_all(rule, NORMAL, before)  # any state live evaluation can be in: pending, active, …
    want_state, want_events = evaluate_all(rule, state, readings)
    got = replay(rule, readings, state=state)
    assert got.events == want_events
    assert got.state == want_state
    assert [(r.ts_ms, r.value, r.signal, r.phase, r.severity) for r in got.rows] == fold(rule, state, readings)
    assert episodes(got.events) == episodes(want_events)
    assert replay(rule, readings, state=state, rows=False).events == want_events


def test_rate_rule_backtest_survives_a_repeated_timestamp() -> None:
    """A second good reading at the same time is ignored by a rate rule's backtest, as live evaluation ignores it."""
    rule = compile_rule(
        load_rules_file("- {name: r, tag: t, condition: {kind: rate, threshold: 5, per: s}, problem_code: P}")[0]
    )
    readings = [(T0, 1.0, 0), (T0 + 1000, 2.0, 0), (T0 + 1000, 50.0, 0), (T0 + 2000, 20.0, 0)]
    got = replay(rule, readings)
    assert [r.signal for r in got.rows] == [None, 1.0, None, 18.0]
    assert [r.phase for r in got.rows] == ["normal", "normal", "normal", "active"]
    assert got.events == evaluate_all(rule, NORMAL, readings)[1]


def pump_history(seed: int = 1, n: int = 900, fault_at: int = 300, fault_end: int = 600) -> list[tuple]:
    """Bearing temperature each second from the pump physics, with a bearing fault between two times."""
    pump = PumpModel(seed=seed)
    out = []
    for t in range(n):
        if t == fault_at:
            pump.inject_fault("bearing_wear", rate=0.8)
        if t == fault_end:
            pump.clear_fault()
        quality = 1 if t % 97 == 0 else 0  # a few bad readings
        out.append((T0 + t * 1000, pump.step(float(t))["bearing_temp"], quality))
    return out


def seed_db(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id")
        client = client.fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude)"
            " VALUES (%s, 'plant', 'P', 48, 11) RETURNING id",
            (client,),
        ).fetchone()[0]
        device = conn.execute(
            "INSERT INTO devices (site_id, key, equipment_model, attributes) VALUES (%s, 'pump-1', 'P100', %s)"
            " RETURNING id",
            (site, json.dumps({"bearing_limit": 85})),
        ).fetchone()[0]
        apply_plan(conn, plan(conn, load_rules_file(RULE)), author="test")
    return device


def store(url: str, device: int, history: list[tuple[int, float, int]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        series = conn.execute(
            "INSERT INTO series (device_id, tag) VALUES (%s, 'bearing_temp') RETURNING id", (device,)
        ).fetchone()[0]
        if conn.execute("SELECT to_regproc('fw_ensure_telemetry_partition') IS NOT NULL").fetchone()[0]:
            conn.execute("SELECT fw_ensure_telemetry_partition(%s::date)", (datetime.fromtimestamp(T0 / 1000, UTC),))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO telemetry (series_id, time, value, quality) VALUES (%s, %s, %s, %s)",
                [(series, datetime.fromtimestamp(ts / 1000, UTC), v, q) for ts, v, q in history],
            )


def ms(dt: datetime | None) -> int | None:
    return None if dt is None else round(dt.timestamp() * 1000)


def test_live_and_backtest_give_identical_episodes(db_url: str) -> None:
    """Readings evaluated live in ragged batches and backtested from storage give the same episodes."""
    device = seed_db(db_url)
    # Two pumps' worth of faults back to back, so there are several episodes with escalation.
    later = [(ts + 900_000, v, q) for ts, v, q in pump_history(seed=2, fault_at=100, fault_end=400)]
    history = pump_history() + later
    rng = random.Random(7)
    with RuleEvaluator(db_url) as ev:
        i = 0
        while i < len(history):
            k = rng.randint(1, 40)
            ev.process([Point(device, "bearing_temp", ts, v, q) for ts, v, q in history[i : i + k]])
            i += k
    with psycopg.connect(db_url) as conn:
        live = [
            (ms(a), ms(b), s)
            for a, b, s in conn.execute(
                "SELECT triggered_at, cleared_at, peak_severity FROM alarms ORDER BY id"
            ).fetchall()
        ]
    store(db_url, device, history)
    with psycopg.connect(db_url) as conn:
        alarms_before = conn.execute("SELECT count(*) FROM alarms").fetchone()[0]
        result = run_backtest(conn, "hot bearing", "plant/pump-1", T0, T0 + 2 * H)
        assert conn.execute("SELECT count(*) FROM alarms").fetchone()[0] == alarms_before  # nothing written
    replayed = [(e.start_ms, e.end_ms, e.peak_severity) for e in result.episodes]
    assert len(live) >= 2 and {s for *_, s in live} == {"critical"}
    assert replayed == live
    # The pure replay over the in-memory readings agrees too.
    with psycopg.connect(db_url) as conn:
        rule = find_rule(conn, "hot bearing")
    pure = episodes(replay(compile_rule(rule.spec, rule.id, {"bearing_limit": 85}), history).events)
    assert [(e.start_ms, e.end_ms, e.peak_severity) for e in pure] == live


def test_cli_backtest_output_labels_and_compare(db_url: str, tmp_path, monkeypatch) -> None:
    """The CLI writes one CSV row per reading, scores against labels, and compares two versions side by side."""
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    device = seed_db(db_url)
    history = pump_history(n=900, fault_at=300, fault_end=500)
    store(db_url, device, history)
    with psycopg.connect(db_url, autocommit=True) as conn:  # version 2: a longer duration
        apply_plan(conn, plan(conn, load_rules_file(RULE.replace("for_s: 20", "for_s: 120"))), author="t")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"start,end,label\n{T0 + 300_000},{T0 + 600_000},bearing\n")
    out_csv = tmp_path / "rows.csv"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "backtest",
            "hot bearing",
            "--device",
            str(device),
            "--from",
            str(T0),
            "--to",
            "2023-11-14T23:13:20Z",
            "--labels",
            str(labels),
            "--output",
            str(out_csv),
            "--version",
            "1",
            "--compare",
            "2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    v1, v2 = json.loads(res.output)
    assert (v1["version"], v2["version"]) == ("1", "2")
    assert v1["score"]["recall"] == 1.0 and v1["score"]["precision"] == 1.0
    assert v2["score"]["mean_detection_delay_s"] > v1["score"]["mean_detection_delay_s"]
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert len(rows) == len(history) and set(rows[0]) == {"time", "value", "score", "state", "severity"}
    assert {r["state"] for r in rows} == {"normal", "pending", "active"}
    table = runner.invoke(
        app,
        [
            "backtest",
            "hot bearing",
            "--device",
            "pump-1",
            "--from",
            str(T0),
            "--to",
            str(T0 + H),
            "--labels",
            str(labels),
        ],
    )
    assert table.exit_code == 0 and "precision" in table.output and "episodes" in table.output
    missing = runner.invoke(
        app, ["backtest", "hot bearing", "--device", "nope", "--from", str(T0), "--to", str(T0 + H)]
    )
    assert missing.exit_code == 2 and "no device 'nope'" in missing.output


def test_cli_scores_per_reading_and_per_incident_from_per_row_labels(db_url: str, tmp_path, monkeypatch) -> None:
    """Per-row labels (time;label) give per-reading and per-incident scores, in JSON and in a readable table."""
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    device = seed_db(db_url)
    history = pump_history(n=900, fault_at=300, fault_end=600)
    store(db_url, device, history)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "time;label\n" + "".join(f"{ts};{'bearing' if 300 <= (ts - T0) // 1000 < 600 else 0}\n" for ts, _, _ in history)
    )
    args = ["backtest", "hot bearing", "--device", "pump-1", "--from", str(T0), "--to", str(T0 + H)]
    res = CliRunner().invoke(app, [*args, "--labels", str(labels), "--json"])
    assert res.exit_code == 0, res.output
    sc = json.loads(res.output)["score"]
    # The same numbers as the pure functions over the replayed readings the rule judged (good quality).
    with psycopg.connect(db_url) as conn:
        rule = find_rule(conn, "hot bearing")
    rep = replay(compile_rule(rule.spec, rule.id, {"bearing_limit": 85}), history)
    judged = rep.rows.evaluated
    want = point_scores(rep.rows.ts[judged], rep.rows.alarmed[judged], load_labels(labels))
    assert sc["points"] == dataclasses.asdict(want)
    assert sc["points"]["readings"] == sum(1 for *_, q in history if q == 0)
    # The duration delays the alarm into the fault; the bearing cools slowly after it, so the alarm outlasts it.
    assert 0 < sc["points"]["recall"] < 1 and 0 < sc["points"]["precision"] < 1
    assert sc["incidents"] == 1 and sc["by_label"]["bearing"]["detected"] == 1
    table = CliRunner().invoke(app, [*args, "--labels", str(labels)])
    assert table.exit_code == 0, table.output
    for text in ("per reading", "per incident", "false-alarm rate", "missed-alarm rate", "detection delay", "bearing"):
        assert text in table.output


def test_cli_backtests_several_devices_in_one_run_and_pools_their_scores(db_url: str, tmp_path, monkeypatch) -> None:
    """Repeating --device replays each device and pools the scores: each device's line, then the pooled table."""
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    first = seed_db(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        second = conn.execute(
            "INSERT INTO devices (site_id, key, equipment_model) SELECT site_id, 'pump-2', 'P100' FROM devices"
            " WHERE id = %s RETURNING id",
            (first,),
        ).fetchone()[0]
    store(db_url, first, pump_history(seed=1, fault_at=300, fault_end=600))
    store(db_url, second, pump_history(seed=2, fault_at=100, fault_end=250))
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"start,end,device,label\n{T0 + 300_000},{T0 + 600_000},pump-1,bearing\n"
        f"{T0 + 100_000},{T0 + 250_000},pump-2,bearing\n{T0 + 700_000},{T0 + 800_000},pump-2,other\n"
    )
    args = ["backtest", "hot bearing", "--device", "pump-1", "--device", "pump-2", "--from", str(T0), "--to"]
    res = CliRunner().invoke(app, [*args, str(T0 + H), "--labels", str(labels), "--json"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.output)
    one, two = body["devices"]
    assert (one["device"]["key"], two["device"]["key"]) == ("pump-1", "pump-2")
    assert (one["score"]["incidents"], two["score"]["incidents"]) == (1, 2)
    pooled = body["pooled"]["score"]
    assert pooled["incidents"] == 3 and pooled["detected"] == one["score"]["detected"] + two["score"]["detected"]
    assert pooled["points"]["readings"] == one["score"]["points"]["readings"] + two["score"]["points"]["readings"]
    assert body["pooled"]["summary"]["episodes"] == len(one["episodes"]) + len(two["episodes"])
    table = CliRunner().invoke(app, [*args, str(T0 + H), "--labels", str(labels)])
    assert table.exit_code == 0, table.output
    assert "plant/pump-1" in table.output and "plant/pump-2" in table.output and "pooled" in table.output
    refused = CliRunner().invoke(app, [*args, str(T0 + H), "--compare", "1"])
    assert refused.exit_code == 2 and "one --device at a time" in refused.output


def test_backtest_a_draft_from_a_file(db_url: str, tmp_path, monkeypatch) -> None:
    """A draft rule that is not applied yet can be backtested from its file; nothing is stored."""
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    device = seed_db(db_url)
    store(db_url, device, pump_history(n=600))
    draft = tmp_path / "draft.yaml"
    draft.write_text(RULE.replace("hot bearing", "draft bearing").replace("for_s: 20", "for_s: 0"))
    res = CliRunner().invoke(
        app,
        [
            "backtest",
            "draft bearing",
            "--file",
            str(draft),
            "--device",
            "pump-1",
            "--from",
            str(T0),
            "--to",
            str(T0 + H),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    body = json.loads(res.output)
    assert body["version"] == "draft" and len(body["episodes"]) >= 1
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM rules WHERE name = 'draft bearing'").fetchone()[0] == 0


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01"])
def test_bad_times_are_refused(bad: str, db_url: str, monkeypatch) -> None:
    """An unparseable --from says which formats are accepted."""
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    res = CliRunner().invoke(app, ["backtest", "x", "--device", "d", "--from", bad, "--to", "0"])
    assert res.exit_code == 2 and "ISO-8601" in res.output


def test_cli_backtest_shows_progress_on_a_terminal(db_url: str, monkeypatch) -> None:
    """On a terminal, a backtest shows a progress bar naming the device being replayed (on stderr, cleared after)."""
    import io

    from rich.console import Console

    import rules.cli

    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    device = seed_db(db_url)
    store(db_url, device, pump_history(n=300, fault_at=100, fault_end=200))
    screen = io.StringIO()
    monkeypatch.setattr(rules.cli, "err", Console(file=screen, force_terminal=True, width=100))
    res = CliRunner().invoke(
        app, ["backtest", "hot bearing", "--device", "pump-1", "--from", str(T0), "--to", str(T0 + H), "--json"]
    )
    assert res.exit_code == 0, res.output
    json.loads(res.output)  # stdout stays machine-readable
    assert "replaying pump-1" in screen.getvalue()
