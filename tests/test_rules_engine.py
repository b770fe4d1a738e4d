"""The rule state machine: every transition, in source time, as a pure function."""

from __future__ import annotations

import pytest

from rules import NORMAL, AlarmCleared, AlarmOpened, RuleState, StateFormatError, ThresholdRule, evaluate, evaluate_all


def rule(op: str = ">", threshold: float = 80.0, duration_s: float = 30.0) -> ThresholdRule:
    return ThresholdRule(
        id=1, name="hot", tag="bearing_temp", operator=op, threshold=threshold, duration_s=duration_s,
        problem_code="BEARING_OVERHEAT",
    )


PENDING = RuleState("pending", since_ms=1_000, last_ts_ms=1_000, peak=85.0)
ACTIVE = RuleState("active", since_ms=1_000, last_ts_ms=40_000, peak=90.0)


@pytest.mark.parametrize(
    ("name", "duration_s", "state", "ts_ms", "value", "quality", "want_state", "want_events"),
    [
        ("normal stays normal below threshold", 30, NORMAL, 1_000, 70.0, 0,
         RuleState("normal", None, 1_000, None), []),
        ("normal → pending when the condition starts", 30, NORMAL, 1_000, 85.0, 0, PENDING, []),
        ("normal → active at once with duration 0", 0, NORMAL, 1_000, 85.0, 0,
         RuleState("active", 1_000, 1_000, 85.0), [AlarmOpened(1_000, 85.0, 1_000, 85.0)]),
        ("pending stays pending before the duration", 30, PENDING, 30_999, 84.0, 0,
         RuleState("pending", 1_000, 30_999, 85.0), []),
        ("pending → active exactly at the duration", 30, PENDING, 31_000, 88.0, 0,
         RuleState("active", 1_000, 31_000, 88.0), [AlarmOpened(31_000, 88.0, 1_000, 88.0)]),
        ("pending → normal when the condition breaks", 30, PENDING, 20_000, 79.0, 0,
         RuleState("normal", None, 20_000, None), []),
        ("active stays active and tracks the peak", 30, ACTIVE, 41_000, 95.0, 0,
         RuleState("active", 1_000, 41_000, 95.0), []),
        ("active keeps the higher peak", 30, ACTIVE, 41_000, 81.0, 0,
         RuleState("active", 1_000, 41_000, 90.0), []),
        ("active → normal with AlarmCleared", 30, ACTIVE, 41_000, 80.0, 0,
         RuleState("normal", None, 41_000, None), [AlarmCleared(41_000, 80.0, 90.0)]),
        ("an older reading is ignored", 30, ACTIVE, 39_000, 10.0, 0, ACTIVE, []),
        ("a reading at the same time (redelivery) is ignored", 30, ACTIVE, 40_000, 10.0, 0, ACTIVE, []),
        ("bad quality does not clear an active alarm", 30, ACTIVE, 41_000, 10.0, 1, ACTIVE, []),
        ("bad quality does not break a pending duration", 30, PENDING, 20_000, 10.0, 2, PENDING, []),
        ("bad quality does not start a pending duration", 30, NORMAL, 1_000, 99.0, 1, NORMAL, []),
    ],
)
def test_transition(name, duration_s, state, ts_ms, value, quality, want_state, want_events) -> None:
    """Each (phase, reading) pair leads to exactly the documented state and events."""
    got_state, got_events = evaluate(rule(duration_s=duration_s), state, ts_ms, value, quality)
    assert (got_state, got_events) == (want_state, want_events), name


@pytest.mark.parametrize(
    ("op", "threshold", "value", "holds"),
    [(">", 80, 80, False), (">", 80, 80.1, True), (">=", 80, 80, True), ("<", 2, 2, False),
     ("<", 2, 1.9, True), ("<=", 2, 2, True), ("<=", 2, 2.1, False)],
)
def test_operators(op: str, threshold: float, value: float, holds: bool) -> None:
    """Each operator compares the value to the threshold strictly or inclusively as written."""
    assert rule(op, threshold).condition(value) is holds


def test_peak_of_a_low_rule_is_the_minimum() -> None:
    """For ``<`` rules the peak is the lowest value, the one furthest into the alarm region."""
    r = rule("<", 2.0, duration_s=10)
    state, events = evaluate_all(r, NORMAL, [(0, 1.5, 0), (5_000, 0.4, 0), (10_000, 1.0, 0)])
    assert events == [AlarmOpened(10_000, 1.0, 0, 0.4)]
    assert state.peak == 0.4


def test_duration_is_source_time_not_arrival_order() -> None:
    """Readings evaluated in one call are sorted by source time, and the duration counts source milliseconds."""
    r = rule(duration_s=30)
    # Arrive shuffled; only 29.999 s of source time have passed.
    state, events = evaluate_all(r, NORMAL, [(29_999, 90.0, 0), (0, 81.0, 0), (15_000, 85.0, 0)])
    assert state.phase == "pending" and events == []
    state, events = evaluate_all(r, state, [(30_000, 82.0, 0)])
    assert state.phase == "active" and events == [AlarmOpened(30_000, 82.0, 0, 90.0)]


def test_an_episode_opens_once_and_clears_once() -> None:
    """A long excursion opens one alarm, then one clear; a second excursion opens again."""
    r = rule(duration_s=2)
    seq = [(t * 1000, v, 0) for t, v in enumerate([81, 82, 83, 84, 85, 70, 90, 91, 92, 60])]
    _, events = evaluate_all(r, NORMAL, seq)
    assert [type(e).__name__ for e in events] == ["AlarmOpened", "AlarmCleared", "AlarmOpened", "AlarmCleared"]
    assert events[0] == AlarmOpened(2_000, 83.0, 0, 83.0)
    assert events[1] == AlarmCleared(5_000, 70.0, 85.0)


@pytest.mark.parametrize("state", [NORMAL, PENDING, ACTIVE, RuleState("normal", None, 5, None)])
def test_state_round_trips_through_json(state: RuleState) -> None:
    """A state survives the trip to the jsonb column and back unchanged."""
    import orjson

    assert RuleState.from_json(orjson.loads(orjson.dumps(state.to_json()))) == state


@pytest.mark.parametrize("data", [{}, {"v": 99, "phase": "normal"}, {"v": 1, "phase": "exploded"}])
def test_unknown_state_format_is_refused(data: dict) -> None:
    """Stored state in a shape this code does not know raises StateFormatError instead of guessing."""
    with pytest.raises(StateFormatError):
        RuleState.from_json(data)


def test_describe_reads_like_the_rule() -> None:
    """The rule in words is what alarm messages start with."""
    assert rule().describe() == "bearing_temp > 80 for 30 s"
    assert rule("<=", 2.5, 0).describe() == "bearing_temp <= 2.5"
