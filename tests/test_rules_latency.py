"""Low-latency live evaluation stays correct: the cached states, the quiet band, skipped state writes and
the alarm-first commit order change speed only — never which alarms open, when, or how many (2 workers,
restarts mid-duration)."""

from __future__ import annotations

import random
import threading

import psycopg
import pytest

from rules import RuleEvaluator, RuleSpec, compile_rule
from rules.backtest import episodes, replay
from rules.engine import RuleState, durable_change, evaluate, quiet_band
from tests.support.hot_bearing import T0, alarms, seed, temps
from tests.support.points import Point

BAND_CASES = [
    (
        {
            "kind": "above",
            "levels": [{"severity": "major", "threshold": 80, "clear": 75}, {"severity": "critical", "threshold": 95}],
        },
        (-float("inf"), 80.0),
    ),
    ({"kind": "above", "threshold": 80, "inclusive": True}, (-float("inf"), 80.0)),
    (
        {"kind": "below", "levels": [{"severity": "major", "threshold": 10}, {"severity": "critical", "threshold": 5}]},
        (10.0, float("inf")),
    ),
    (
        {
            "kind": "outside",
            "levels": [{"severity": "major", "low": 20, "high": 80}, {"severity": "critical", "low": 10, "high": 90}],
        },
        (20.0, 80.0),
    ),
    ({"kind": "inside", "low": 20, "high": 80}, None),
    ({"kind": "rate", "direction": "either", "per": "s", "threshold": 5}, None),
]


@pytest.mark.parametrize(("condition", "band"), BAND_CASES)
def test_quiet_band_is_exactly_where_nothing_can_trigger(condition: dict, band: tuple | None) -> None:
    """Inside the band a normal state gets no event and no durable change; at its edges a level may trigger."""
    rule = compile_rule(RuleSpec(name="r", tag="t", problem_code="P", condition=condition, count=1))  # type: ignore[arg-type]
    assert quiet_band(rule) == band
    if band is None:
        return
    lo, hi = band
    rng = random.Random(7)
    finite_lo = lo if lo != -float("inf") else -1e6
    finite_hi = hi if hi != float("inf") else 1e6
    for i in range(500):
        v = rng.uniform(finite_lo, finite_hi)
        if not lo < v < hi:
            continue
        new, events = evaluate(rule, RuleState(last_ts_ms=T0, last_value=50.0), T0 + 1000 * (i + 1), v)
        assert events == [] and new.phase == "normal"
        assert not durable_change(RuleState(last_ts_ms=T0, last_value=50.0), new)
    for beyond in (lo - 1, hi + 1):  # just outside the band a level triggers: the band is not too wide
        if abs(beyond) != float("inf"):
            new, _ = evaluate(rule, RuleState(last_ts_ms=T0, last_value=50.0), T0 + 1000, beyond)
            assert new.phase != "normal"


def test_durable_change_keeps_what_is_in_flight_and_skips_timestamps() -> None:
    """A moved timestamp alone is not worth a write; phase, count, start, peak, severity, keep-firing are;
    for rate rules the previous value is in flight too."""
    normal = RuleState(last_ts_ms=1, last_value=50.0)
    assert not durable_change(normal, RuleState(last_ts_ms=2, last_value=51.0))
    pending = RuleState(phase="pending", since_ms=1, last_ts_ms=1, peak=90.0, severity="major", count=1)
    assert durable_change(normal, pending)
    assert durable_change(
        pending, RuleState(phase="pending", since_ms=1, last_ts_ms=2, peak=90.0, severity="major", count=2)
    )
    active = RuleState(phase="active", since_ms=1, last_ts_ms=5, peak=90.0, severity="major")
    assert not durable_change(
        active, RuleState(phase="active", since_ms=1, last_ts_ms=6, peak=90.0, severity="major", last_value=85.0)
    )
    assert durable_change(
        active, RuleState(phase="active", since_ms=1, last_ts_ms=6, peak=90.0, severity="major", clear_since_ms=6)
    )
    assert durable_change(normal, RuleState(last_ts_ms=2, last_value=51.0), rate=True)


def xmins(url: str) -> dict[tuple[int, int], int]:
    with psycopg.connect(url) as conn:
        return {
            (r, d): int(x)
            for r, d, x in conn.execute("SELECT rule_id, device_id, xmin::text::bigint FROM rule_states").fetchall()
        }


def test_quiet_readings_write_nothing_and_a_restart_mid_duration_continues(db_url: str) -> None:
    """Normal readings leave the state row untouched; a duration begun before a restart (with quiet readings
    of other devices and a late redelivery in between) completes at the right reading after it."""
    _, pump, fan = seed(db_url, duration_s=30)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE devices SET equipment_model = 'P100' WHERE id = %s", (fan,))
    first = RuleEvaluator(db_url)
    assert first.process(temps(pump, 0, [60]) + temps(fan, 0, [60])) == []
    before = xmins(db_url)
    assert first.process(temps(pump, 10, [61, 62]) + temps(fan, 10, [63, 64])) == []  # quiet: no writes
    assert xmins(db_url) == before
    assert first.process(temps(pump, 30, [85, 86])) == []  # 30 s, 40 s: pending (written)
    assert xmins(db_url)[next(k for k in before if k[1] == pump)] != before[next(k for k in before if k[1] == pump)]
    first.close()
    with RuleEvaluator(db_url) as second:
        assert second.process(temps(pump, 35, [99])) == []  # late (before 40 s): ignored after the restart too
        assert second.process(temps(fan, 50, [60])) == []
        events = second.process(temps(pump, 50, [87, 88]))  # 50 s: 20 s held; 60 s: 30 s held → opens
    assert [(e.type, e.ts_ms) for e in events] == [("alarm_opened", T0 + 60_000)]
    rows = alarms(db_url)
    assert len(rows) == 1 and int(rows[0][5].timestamp() * 1000) == T0 + 60_000


def test_a_quiet_reading_between_loud_ones_still_breaks_the_run(db_url: str) -> None:
    """`count: 3` with 90, 60, 90, 90 in one batch: the quiet 60 (deferred for latency) is evaluated in time
    order with its pair's loud readings, so it resets the run — no alarm until a third 90 in a row."""
    from rules.rulesfile import apply_plan, load_rules_file, plan

    _, pump, _ = seed(db_url, duration_s=0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        apply_plan(
            conn,
            plan(
                conn,
                load_rules_file(
                    "- {name: three hot, tag: bearing_temp, condition: {kind: above, threshold: 80}, count: 3,"
                    " scope: {equipment_models: [P100]}, problem_code: P}"
                ),
            ),
            author="t",
        )
        conn.execute("DELETE FROM rules WHERE name = 'hot bearing'")
    with RuleEvaluator(db_url) as ev:
        assert ev.process(temps(pump, 0, [60])) == []  # cached: normal
        assert ev.process(temps(pump, 10, [90, 60, 90, 90])) == []
        assert [(e.type, e.ts_ms) for e in ev.process(temps(pump, 50, [90]))] == [("alarm_opened", T0 + 50_000)]


def test_a_stale_cache_is_never_trusted_over_the_row(db_url: str) -> None:
    """Worker A caches a normal state; worker B moves the pair to pending; A's next reading completes B's
    duration (A re-reads the row because its version changed) instead of starting a new one."""
    _, pump, _ = seed(db_url, duration_s=20)
    a, b = RuleEvaluator(db_url), RuleEvaluator(db_url)
    try:
        assert a.process(temps(pump, 0, [60])) == []
        assert b.process(temps(pump, 10, [90])) == []  # pending since 10 s (B)
        assert b.process(temps(pump, 20, [60])) == []  # back to normal (B)
        assert b.process(temps(pump, 30, [91])) == []  # pending since 30 s (B)
        events = a.process(temps(pump, 50, [92]))  # 20 s after 30 s: opens, from B's state
        assert [(e.type, e.ts_ms) for e in events] == [("alarm_opened", T0 + 50_000)]
        assert b.process(temps(pump, 60, [93])) == []  # B's cache is stale now too: no second alarm
    finally:
        a.close()
        b.close()
    assert [r[2] for r in alarms(db_url)] == ["active"]


def test_two_workers_sharing_devices_open_the_alarms_a_single_replay_opens(db_url: str) -> None:
    """40 devices, readings of each device alternating between two concurrent workers step by step (so every
    cache goes stale all the time), with batches mixing quiet and alarming pairs: the alarms (open and clear
    times) are exactly the episodes of a pure replay of each device's readings — none missing, none twice."""
    rule_id, pump, _ = seed(db_url, duration_s=3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        site = conn.execute("SELECT site_id FROM devices WHERE id = %s", (pump,)).fetchone()[0]
        devices = [pump] + [
            conn.execute(
                "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, %s, 'P100') RETURNING id",
                (site, f"pump-x{i}"),
            ).fetchone()[0]
            for i in range(39)
        ]
        rule_spec = conn.execute("SELECT definition FROM rules WHERE id = %s", (rule_id,)).fetchone()[0]
    rng = random.Random(3)
    steps = 40
    series = {d: [rng.choice([60.0, 70.0, 85.0, 90.0]) if d % 3 == 0 else 60.0 for _ in range(steps)] for d in devices}
    evs = [RuleEvaluator(db_url), RuleEvaluator(db_url)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for step in range(steps):
                barrier.wait()
                batch = [
                    Point(d, "bearing_temp", T0 + step * 1000, series[d][step])
                    for i, d in enumerate(devices)
                    if (i + step) % 2 == k
                ]
                evs[k].process(batch)
        except BaseException as exc:  # pragma: no cover - asserted below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for e in evs:
        e.close()
    assert errors == []
    compiled = compile_rule(RuleSpec.model_validate(rule_spec), rule_id)
    expected = sorted(
        (d, ep.start_ms, ep.end_ms)
        for d in devices
        for ep in episodes(replay(compiled, [(T0 + s * 1000, v, 0) for s, v in enumerate(series[d])]).events)
    )
    with psycopg.connect(db_url) as conn:
        got = sorted(
            (d, round(t.timestamp() * 1000), c and round(c.timestamp() * 1000))
            for d, t, c in conn.execute("SELECT device_id, triggered_at, cleared_at FROM alarms").fetchall()
        )
    assert len(expected) >= 5  # the data really alarms (and clears) on several devices
    assert got == expected


def test_warm_binds_every_watched_series_before_the_first_batch(db_url: str) -> None:
    """`warm()` (run by `fieldwatch serve` before ingest consumes) binds each stored series a rule watches, so
    the first batch compiles nothing on the reading path; unwatched tags and out-of-scope devices bind to no
    rule; evaluation afterwards is unchanged."""
    rule_id, pump, fan = seed(db_url, duration_s=0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for device, tag in ((pump, "bearing_temp"), (pump, "flow"), (fan, "bearing_temp")):
            conn.execute("INSERT INTO series (device_id, tag) VALUES (%s, %s)", (device, tag))
    with RuleEvaluator(db_url) as ev:
        assert ev.warm() == 2  # the two bearing_temp series; flow has no rule
        assert [t[2] for t in ev._bindings[("bearing_temp", pump)]] == [rule_id]
        assert ev._bindings[("bearing_temp", fan)] == []  # F20 is outside the rule's P100 scope
        assert ("flow", pump) not in ev._bindings
        compiled = dict(ev._compiled)
        events = ev.process(temps(pump, 0, [90]) + temps(fan, 0, [95]))
        assert [(e.type, e.device_id) for e in events] == [("alarm_opened", pump)]
        assert ev._compiled == compiled  # nothing was bound on the reading path
