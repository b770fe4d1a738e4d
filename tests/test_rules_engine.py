"""The rule state machine: every feature, as tables of readings → events, in source time."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from rules import (
    NORMAL,
    AlarmCleared,
    AlarmOpened,
    DeviceInfo,
    RuleSpec,
    RuleState,
    Scope,
    SeverityChanged,
    StateFormatError,
    UnboundThreshold,
    compile_rule,
    evaluate,
    evaluate_all,
)


def spec(condition: dict[str, Any], **kw: Any) -> RuleSpec:
    return RuleSpec(name="r", tag="t", problem_code="P", condition=condition, **kw)  # type: ignore[arg-type]


def run(s: RuleSpec, values: list[float | None], *, step_s: float = 1.0, attrs: dict | None = None) -> list[tuple]:
    """Feed values 1 s apart (None = a bad-quality reading); events as compact tuples (t in s)."""
    rule = compile_rule(s, 1, attrs)
    state, out = NORMAL, []
    for i, v in enumerate(values):
        state, events = evaluate(rule, state, round(i * step_s * 1000), 0.0 if v is None else v, 1 if v is None else 0)
        for e in events:
            if isinstance(e, AlarmOpened):
                out.append(("open", e.ts_ms // 1000, e.severity))
            elif isinstance(e, SeverityChanged):
                out.append(("sev", e.ts_ms // 1000, e.severity))
            else:
                out.append(("clear", e.ts_ms // 1000))
    return out


ABOVE = {"kind": "above", "threshold": 80}
LADDER = {
    "kind": "above",
    "levels": [{"severity": "warning", "threshold": 80}, {"severity": "critical", "threshold": 95}],
}

CASES = [
    ("above opens at once and clears", spec(ABOVE), [70, 81, 82, 79], [("open", 1, "major"), ("clear", 3)]),
    ("above is strict at the threshold", spec(ABOVE), [80, 80], []),
    ("inclusive above fires at the threshold", spec({**ABOVE, "inclusive": True}), [80], [("open", 0, "major")]),
    (
        "below",
        spec({"kind": "below", "threshold": 2, "severity": "minor"}),
        [3, 1.9, 2.5],
        [("open", 1, "minor"), ("clear", 2)],
    ),
    (
        "outside a band (both sides)",
        spec({"kind": "outside", "low": 10, "high": 20}),
        [15, 21, 15, 9, 10],
        [("open", 1, "major"), ("clear", 2), ("open", 3, "major"), ("clear", 4)],
    ),
    (
        "inside a forbidden band",
        spec({"kind": "inside", "low": 10, "high": 20}),
        [5, 10, 20, 21],
        [("open", 1, "major"), ("clear", 3)],
    ),
    (
        "duration: held 3 s of source time",
        spec(ABOVE, for_s=3),
        [81, 81, 81, 81, 70],
        [("open", 3, "major"), ("clear", 4)],
    ),
    ("duration broken restarts", spec(ABOVE, for_s=2), [81, 81, 70, 81, 81, 81], [("open", 5, "major")]),
    ("N in a row", spec(ABOVE, count=3), [81, 81, 70, 81, 81, 81], [("open", 5, "major")]),
    (
        "N in a row and a duration both required",
        spec(ABOVE, count=2, for_s=3),
        [81, 81, 81, 81],
        [("open", 3, "major")],
    ),
    (
        "hysteresis: stays active until below clear",
        spec({**ABOVE, "clear": 75}),
        [81, 79, 76, 75, 79, 81],
        [("open", 0, "major"), ("clear", 3), ("open", 5, "major")],
    ),
    ("hysteresis does not start an alarm", spec({**ABOVE, "clear": 75}), [79, 78], []),
    (
        "keep firing for 2 s after the condition stops",
        spec(ABOVE, keep_firing_for_s=2),
        [81, 70, 70, 70],
        [("open", 0, "major"), ("clear", 3)],
    ),
    (
        "keep-firing window resets when it comes back",
        spec(ABOVE, keep_firing_for_s=2),
        [81, 70, 81, 70, 70, 70],
        [("open", 0, "major"), ("clear", 5)],
    ),
    (
        "ladder: opens at the rung reached, escalates, de-escalates, clears",
        spec(LADDER),
        [81, 96, 85, 70],
        [("open", 0, "warning"), ("sev", 1, "critical"), ("sev", 2, "warning"), ("clear", 3)],
    ),
    (
        "ladder with duration opens at the worst rung holding then",
        spec(LADDER, for_s=1),
        [96, 96, 70],
        [("open", 1, "critical"), ("clear", 2)],
    ),
    (
        "ladder hysteresis per rung",
        spec(
            {
                "kind": "above",
                "levels": [
                    {"severity": "warning", "threshold": 80},
                    {"severity": "critical", "threshold": 95, "clear": 90},
                ],
            }
        ),
        [96, 91, 89, 70],
        [("open", 0, "critical"), ("sev", 2, "warning"), ("clear", 3)],
    ),
    (
        "rate of change per minute (rise)",
        spec({"kind": "rate", "direction": "rise", "per": "min", "threshold": 30}),
        [10, 10.4, 11, 11.2],
        [("open", 2, "major"), ("clear", 3)],
    ),
    (
        "rate: a fall does not trip a rise rule",
        spec({"kind": "rate", "direction": "rise", "per": "s", "threshold": 1}),
        [10, 5, 0],
        [],
    ),
    (
        "rate either way",
        spec({"kind": "rate", "direction": "either", "per": "s", "threshold": 1}),
        [10, 5, 5],
        [("open", 1, "major"), ("clear", 2)],
    ),
    (
        "bad quality neither holds nor breaks a duration",
        spec(ABOVE, for_s=2),
        [81, None, 81, None],
        [("open", 2, "major")],
    ),
    ("bad quality does not clear", spec(ABOVE), [81, None, None], [("open", 0, "major")]),
]


@pytest.mark.parametrize(("name", "rule_spec", "values", "want"), CASES, ids=[c[0] for c in CASES])
def test_feature(name: str, rule_spec: RuleSpec, values: list, want: list) -> None:
    """Each rule feature yields exactly the documented open/escalate/clear events at the documented times."""
    assert run(rule_spec, values) == want


def test_attribute_thresholds_bind_per_device() -> None:
    """One per-model rule with an attribute threshold fires at each device's own limit, or uses the default."""
    s = spec({"kind": "above", "threshold": {"attribute": "max_temp", "default": 80}})
    assert run(s, [85], attrs={"max_temp": 90}) == []
    assert run(s, [95], attrs={"max_temp": 90}) == [("open", 0, "major")]
    assert run(s, [85], attrs={}) == [("open", 0, "major")]
    assert run(s, [85], attrs={"max_temp": "88.5"}) == []


@pytest.mark.parametrize(
    ("attrs", "message"),
    [({}, "no attribute 'limit'"), ({"limit": "hot"}, "not a number"), ({"limit": 70, "reset": 75}, "wrong side")],
)
def test_unbound_thresholds_name_rule_and_attribute(attrs: dict, message: str) -> None:
    """A device that cannot supply a threshold is refused with the rule, the field path and the reason."""
    s = spec({"kind": "above", "threshold": {"attribute": "limit"}, "clear": {"attribute": "reset", "default": 60}})
    with pytest.raises(UnboundThreshold, match=message) as err:
        compile_rule(s, 1, attrs)
    assert "rule 'r' condition.levels.0" in str(err.value)


@pytest.mark.parametrize(
    ("scope", "matches"),
    [
        ({}, True),
        ({"equipment_models": ["P100"]}, True),
        ({"equipment_models": ["F20"]}, False),
        ({"sites": ["plant"], "clients": ["Acme"]}, True),
        ({"clients": ["Other"]}, False),
        ({"devices": ["pump-1"]}, True),
        ({"devices": ["plant/pump-1"]}, True),
        ({"devices": ["7"]}, True),
        ({"devices": ["pump-2"]}, False),
    ],
)
def test_scope(scope: dict, matches: bool) -> None:
    """Scopes combine model, site, client and device lists; every non-empty dimension must match."""
    dev = DeviceInfo(id=7, key="pump-1", equipment_model="P100", site="plant", client="Acme")
    assert Scope(**scope).matches(dev) is matches


@pytest.mark.parametrize(
    ("condition", "loc"),
    [
        ({"kind": "above", "threshold": 80, "clear": 85}, "clear (85) must not be above threshold"),
        ({"kind": "below", "threshold": 2, "clear": 1}, "must not be below threshold"),
        ({"kind": "outside", "low": 20, "high": 10}, "low (20) must not be above high"),
        (
            {"kind": "above", "levels": [{"severity": "major", "threshold": 1}, {"severity": "major", "threshold": 2}]},
            "repeated: major",
        ),
        ({"kind": "sideways", "threshold": 1}, "does not match any of the expected tags"),
        ({"kind": "above", "threshold": 1, "severity": "bad"}, "condition.above.levels.0.severity"),
    ],
)
def test_invalid_conditions_say_what_is_wrong(condition: dict, loc: str) -> None:
    """Contradictory or unknown conditions are refused with a message naming the field."""
    with pytest.raises(ValidationError, match=loc.replace("(", r"\(").replace(")", r"\)")):
        spec(condition)


def test_duration_is_source_time_not_arrival_order() -> None:
    """Readings evaluated in one call are sorted by source time, and the duration counts source milliseconds."""
    r = compile_rule(spec(ABOVE, for_s=30))
    state, events = evaluate_all(r, NORMAL, [(29_999, 90.0, 0), (0, 81.0, 0), (15_000, 85.0, 0)])
    assert state.phase == "pending" and events == []
    state, events = evaluate_all(r, state, [(30_000, 82.0, 0)])
    assert events == [AlarmOpened(30_000, 82.0, 0, 90.0, "major")]


def test_old_and_duplicate_readings_are_ignored() -> None:
    """A reading at or before the last one evaluated (a redelivery) changes nothing."""
    r = compile_rule(spec(ABOVE))
    state, _ = evaluate(r, NORMAL, 5_000, 90.0)
    assert evaluate(r, state, 5_000, 10.0) == (state, [])
    assert evaluate(r, state, 4_000, 10.0) == (state, [])


def test_peak_is_the_worst_signal_of_the_episode() -> None:
    """For below rules the peak is the minimum; it is reported on the clear event."""
    r = compile_rule(spec({"kind": "below", "threshold": 2}, for_s=10))
    _, events = evaluate_all(r, NORMAL, [(0, 1.5, 0), (5_000, 0.4, 0), (10_000, 1.0, 0), (11_000, 3.0, 0)])
    assert events == [AlarmOpened(10_000, 1.0, 0, 0.4, "major"), AlarmCleared(11_000, 3.0, 0.4)]


@pytest.mark.parametrize(
    "state",
    [
        NORMAL,
        RuleState("pending", 1_000, 1_000, 85.0, "major", 2),
        RuleState("active", 1, 5, 9.0, "critical", 3, 4, 8.5),
    ],
)
def test_state_round_trips_through_json(state: RuleState) -> None:
    """A state survives the trip to the jsonb column and back unchanged."""
    assert RuleState.from_json(orjson.loads(orjson.dumps(state.to_json()))) == state


def test_version_1_states_still_load() -> None:
    """States written before ladders and counts existed are read, not refused."""
    old = {"v": 1, "phase": "pending", "since_ms": 1, "last_ts_ms": 2, "peak": 3.0}
    assert RuleState.from_json(old) == RuleState("pending", 1, 2, 3.0, None, 1)


@pytest.mark.parametrize("data", [{}, {"v": 99, "phase": "normal"}, {"v": 2, "phase": "exploded"}])
def test_unknown_state_format_is_refused(data: dict) -> None:
    """Stored state in a shape this code does not know raises StateFormatError instead of guessing."""
    with pytest.raises(StateFormatError):
        RuleState.from_json(data)


@pytest.mark.parametrize(
    ("condition", "kw", "text"),
    [
        (ABOVE, {"for_s": 30}, "t > 80 for 30 s"),
        ({"kind": "below", "threshold": 2.5, "inclusive": True}, {"count": 3}, "t <= 2.5 (3 in a row)"),
        ({"kind": "outside", "low": 1, "high": 2}, {}, "t outside [1, 2]"),
        ({"kind": "rate", "direction": "rise", "threshold": 5}, {}, "t rises > 5/min"),
        ({"kind": "above", "threshold": {"attribute": "lim"}}, {}, "t > @lim"),
    ],
)
def test_describe_reads_like_the_rule(condition: dict, kw: dict, text: str) -> None:
    """The rule in words is what alarm messages start with."""
    assert spec(condition, **kw).describe() == text
