"""Live rule evaluation against the real database: alarms, durable state, concurrency, NOTIFY."""

from __future__ import annotations

import threading

import orjson
import psycopg
import pytest

from fwcore.events import AlarmOpenedEvent, parse
from rules import RuleEvaluator, RuleState, create_rule, get_rule, list_rules
from rules.store import DuplicateRuleName, UnknownSkill
from tests.support.hot_bearing import T0, alarms, seed, temps
from tests.support.points import Point


def test_opens_one_alarm_after_the_duration_and_clears_it(db_url: str) -> None:
    """A 30 s excursion opens exactly one alarm at the reading that completes 30 s, and a low reading clears it."""
    rule_id, pump, _ = seed(db_url)
    with RuleEvaluator(db_url) as ev:
        assert ev.process(temps(pump, 0, [81, 82, 83])) == []  # 0..20 s: pending
        opened = ev.process(temps(pump, 30, [83.1, 82]))  # 30 s: opens; 40 s: still active
        assert [(e.type, e.ts_ms, e.value) for e in opened] == [("alarm_opened", T0 + 30_000, 83.1)]
        rows = alarms(db_url)
        assert len(rows) == 1
        assert rows[0][:5] == (rule_id, pump, "active", "bearing_temp > 80 for 30 s (peak 83.1)", 83.1)
        assert int(rows[0][5].timestamp() * 1000) == T0 + 30_000
        cleared = ev.process(temps(pump, 50, [70, 90]))
        assert [e.type for e in cleared] == ["alarm_cleared"]
        assert cleared[0].alarm_id == opened[0].alarm_id
    rows = alarms(db_url)
    assert [(r[2], r[6]) for r in rows] == [("cleared", True)]


def test_only_matching_tags_and_models_are_evaluated(db_url: str) -> None:
    """A rule scoped to P100 ignores an F20 device and other tags, and unknown devices are skipped."""
    _, _, fan = seed(db_url, duration_s=0)
    with RuleEvaluator(db_url) as ev:
        assert ev.process(temps(fan, 0, [99])) == []
        assert ev.process([Point(fan, "other_tag", T0, 99.0), Point(999_999, "bearing_temp", T0, 99.0)]) == []
    assert alarms(db_url) == []


def test_state_survives_a_restart_mid_duration(db_url: str) -> None:
    """A duration half elapsed in one evaluator completes in a fresh one: state lives in the database."""
    _, pump, _ = seed(db_url)
    first = RuleEvaluator(db_url)
    assert first.process(temps(pump, 0, [85, 86])) == []  # 0 s and 10 s: pending
    first.close()
    with psycopg.connect(db_url) as conn:
        (raw,) = conn.execute("SELECT state FROM rule_states").fetchone()
    assert RuleState.from_json(raw).phase == "pending"
    with RuleEvaluator(db_url) as second:
        events = second.process(temps(pump, 30, [87]))
    assert [e.type for e in events] == ["alarm_opened"]


def test_duplicate_and_late_readings_do_not_reopen(db_url: str) -> None:
    """Redelivering a batch, or a stale older reading, changes nothing once evaluated."""
    _, pump, _ = seed(db_url, duration_s=0)
    batch = temps(pump, 0, [90, 70, 90])
    with RuleEvaluator(db_url) as ev:
        assert [e.type for e in ev.process(batch)] == ["alarm_opened", "alarm_cleared", "alarm_opened"]
        assert ev.process(batch) == []
        assert ev.process(temps(pump, 5, [10])) == []  # older than last_ts: ignored
    assert [r[2] for r in alarms(db_url)] == ["cleared", "active"]


def test_two_evaluators_fed_concurrently_open_exactly_one_alarm(db_url: str) -> None:
    """Two workers evaluating interleaved readings of one device at once open one alarm, not two."""
    _, pump, _ = seed(db_url, duration_s=5)
    points = temps(pump, 0, [90.0 + i % 7 for i in range(60)], step_s=1)
    evs = [RuleEvaluator(db_url), RuleEvaluator(db_url)]
    barrier = threading.Barrier(2)
    opened: list[int] = []
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait()
            for i in range(k, len(points), 2):  # worker 0 gets even points, worker 1 odd ones
                opened.extend(e.alarm_id for e in evs[k].process([points[i]]) if e.type == "alarm_opened")
        except BaseException as exc:  # pragma: no cover - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for e in evs:
        e.close()
    assert errors == []
    assert len(opened) == 1
    assert [r[2] for r in alarms(db_url)] == ["active"]


def test_notify_arrives_after_commit(db_url: str) -> None:
    """A LISTENing connection receives alarm_opened with ids once the evaluation commits."""
    rule_id, pump, _ = seed(db_url, duration_s=0)
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN fw_events")
        with RuleEvaluator(db_url) as ev:
            (event,) = ev.process(temps(pump, 0, [95]))
        notes = list(listener.notifies(timeout=2.0, stop_after=1))
        got = [orjson.loads(n.payload) for n in notes]
    assert got == [{"type": "alarm_opened", "alarm_id": event.alarm_id, "device_id": pump, "rule_id": rule_id}]
    assert [parse(n.payload) for n in notes] == [
        AlarmOpenedEvent(alarm_id=event.alarm_id, device_id=pump, rule_id=rule_id)
    ]


def test_disabled_rules_are_not_evaluated_after_refresh(db_url: str) -> None:
    """Disabling a rule takes effect once the evaluator reloads its cache."""
    from rules import set_rule_enabled

    rule_id, pump, _ = seed(db_url, duration_s=0)
    with RuleEvaluator(db_url) as ev:
        assert ev.process(temps(pump, 0, [70])) == []
        with psycopg.connect(db_url) as conn:
            assert set_rule_enabled(conn, rule_id, False)
        ev.refresh()
        assert ev.process(temps(pump, 10, [95])) == []


def test_store_creates_lists_and_refuses_bad_rules(db_url: str) -> None:
    """Rules round-trip through the store; duplicate names and unknown skills raise our own errors."""
    rule_id, _, _ = seed(db_url)
    with psycopg.connect(db_url) as conn:
        r = get_rule(conn, rule_id)
        assert r is not None
        assert (r.spec.condition.kind, r.spec.condition.levels[0].threshold, r.spec.for_s, r.spec.severity) == (
            "above",
            80,
            30,
            "critical",
        )
        assert [x.name for x in list_rules(conn)] == ["hot bearing"]
        assert get_rule(conn, 12345) is None
        with pytest.raises(DuplicateRuleName):
            create_rule(conn, name="hot bearing", tag="t", operator="<", threshold=1, problem_code="X")
        with pytest.raises(UnknownSkill):
            create_rule(conn, name="x", tag="t", operator="<", threshold=1, problem_code="X", required_skill="nope")
        with pytest.raises(ValueError):
            create_rule(conn, name="y", tag="t", operator="==", threshold=1, problem_code="X")  # type: ignore[arg-type]


def test_latched_alarm_stays_until_acknowledged(db_url: str) -> None:
    """A latched rule's alarm outlives its condition and clears once acknowledged; unlatched ones clear alone."""
    from rules import save_rule
    from rules.alarms import release_latched
    from rules.rulesfile import load_rules_file

    _, pump, _ = seed(db_url, duration_s=0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        (spec,) = load_rules_file(
            "- {name: latched, tag: bearing_temp, latch: true, problem_code: X,"
            " condition: {kind: above, threshold: 90}}"
        )
        latched = save_rule(conn, spec, author="t")[0].id
    with RuleEvaluator(db_url) as ev:
        ev.process(temps(pump, 0, [95, 70]))
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = dict(conn.execute("SELECT rule_id, state FROM alarms").fetchall())
        assert rows[latched] == "active" and list(rows.values()).count("cleared") == 1
        (alarm_id,) = conn.execute("SELECT id FROM alarms WHERE rule_id = %s", (latched,)).fetchone()
        assert not release_latched(conn, alarm_id, by="ann")  # not acknowledged yet
        conn.execute("UPDATE alarms SET state = 'acknowledged', acknowledged_at = now() WHERE id = %s", (alarm_id,))
        assert release_latched(conn, alarm_id, by="ann")
        assert conn.execute("SELECT state, cleared_by FROM alarms WHERE id = %s", (alarm_id,)).fetchone() == (
            "cleared",
            "ann",
        )


def test_severity_ladder_and_attribute_thresholds_live(db_url: str) -> None:
    """Live alarms escalate along the ladder (peak severity kept) and use per-device attribute limits."""
    from rules import save_rule
    from rules.rulesfile import load_rules_file

    _, pump, _ = seed(db_url, duration_s=0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE devices SET attributes = '{\"limit\": 100}' WHERE id = %s", (pump,))
        conn.execute("DELETE FROM rules")
        (spec,) = load_rules_file(
            "- {name: ladder, tag: bearing_temp, problem_code: X, condition: {kind: above,"
            " levels: [{severity: warning, threshold: {attribute: limit}},"
            " {severity: critical, threshold: 120}]}}"
        )
        save_rule(conn, spec, author="t")
    with RuleEvaluator(db_url) as ev:
        assert ev.process(temps(pump, 0, [95])) == []  # below this pump's own limit
        events = ev.process(temps(pump, 10, [101, 125, 105]))
    assert [e.type for e in events] == ["alarm_opened", "alarm_severity_changed", "alarm_severity_changed"]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT severity, peak_severity FROM alarms").fetchone() == ("warning", "critical")
