"""The one rule state machine: a pure function of (rule, state, reading) → (state, events).

Live evaluation (:mod:`rules.service`) and, later, backtests on history call the same
:func:`evaluate`, so a rule behaves identically in both. Time is *source* time (the
reading's ``ts_ms``), never the wall clock: a duration is measured between readings.

Phases::

    normal ──cond──▶ pending ──cond, held ≥ duration──▶ active ──not cond──▶ normal
       ▲               │                                   (AlarmCleared)
       └───not cond────┘          duration 0: normal ──cond──▶ active (AlarmOpened)

Rules of the road:

* readings with ``ts_ms <= last_ts_ms`` are ignored — no time travel, and a redelivered
  reading (at-least-once delivery) cannot count twice;
* bad-quality readings (``quality != 0``) are ignored entirely: they neither hold nor
  break a condition and do not move ``last_ts_ms``; the state is as if they never came;
* ``peak`` is the value furthest into the alarm region during the current episode.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from rules.model import ThresholdRule

Phase = Literal["normal", "pending", "active"]
STATE_FORMAT = 1  # bump when the JSON shape changes; from_json refuses unknown formats


class StateFormatError(ValueError):
    """Stored rule state is not in a format this code understands."""


@dataclass(frozen=True, slots=True)
class RuleState:
    """Evaluation state of one rule on one device; stored as JSON in ``rule_states.state``."""

    phase: Phase = "normal"
    since_ms: int | None = None  # source time the condition became true (pending/active)
    last_ts_ms: int | None = None  # newest good reading evaluated
    peak: float | None = None  # worst value of the current episode

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_FORMAT,
            "phase": self.phase,
            "since_ms": self.since_ms,
            "last_ts_ms": self.last_ts_ms,
            "peak": self.peak,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleState:
        if data.get("v") != STATE_FORMAT or data.get("phase") not in ("normal", "pending", "active"):
            raise StateFormatError(f"unknown rule state {data!r}")
        return cls(
            phase=data["phase"],
            since_ms=data.get("since_ms"),
            last_ts_ms=data.get("last_ts_ms"),
            peak=data.get("peak"),
        )


@dataclass(frozen=True, slots=True)
class AlarmOpened:
    """The condition held long enough: an alarm should open."""

    ts_ms: int  # source time of the reading that completed the duration
    value: float  # that reading's value
    since_ms: int  # when the condition started holding
    peak: float


@dataclass(frozen=True, slots=True)
class AlarmCleared:
    """The condition stopped holding while an alarm was open."""

    ts_ms: int
    value: float
    peak: float | None


RuleEvent = AlarmOpened | AlarmCleared
NORMAL = RuleState()


def evaluate(
    rule: ThresholdRule, state: RuleState, ts_ms: int, value: float, quality: int = 0
) -> tuple[RuleState, list[RuleEvent]]:
    """Advance ``state`` by one reading; returns the new state and the events it caused."""
    if quality != 0:
        return state, []
    if state.last_ts_ms is not None and ts_ms <= state.last_ts_ms:
        return state, []
    holds = rule.condition(value)
    if state.phase == "normal":
        if not holds:
            return replace(state, last_ts_ms=ts_ms), []
        return _pending_or_active(rule, RuleState("pending", ts_ms, ts_ms, value), value)
    if state.phase == "pending":
        if not holds:
            return RuleState("normal", None, ts_ms, None), []
        peak = value if state.peak is None else rule.worse(state.peak, value)
        return _pending_or_active(rule, replace(state, last_ts_ms=ts_ms, peak=peak), value)
    # active
    if not holds:
        return RuleState("normal", None, ts_ms, None), [AlarmCleared(ts_ms, value, state.peak)]
    peak = value if state.peak is None else rule.worse(state.peak, value)
    return replace(state, last_ts_ms=ts_ms, peak=peak), []


def _pending_or_active(rule: ThresholdRule, pending: RuleState, value: float) -> tuple[RuleState, list[RuleEvent]]:
    """Promote a pending state whose condition has held for the rule's duration."""
    assert pending.since_ms is not None and pending.last_ts_ms is not None and pending.peak is not None
    if pending.last_ts_ms - pending.since_ms < rule.duration_ms:
        return pending, []
    opened = AlarmOpened(ts_ms=pending.last_ts_ms, value=value, since_ms=pending.since_ms, peak=pending.peak)
    return replace(pending, phase="active"), [opened]


def evaluate_all(
    rule: ThresholdRule, state: RuleState, readings: list[tuple[int, float, int]]
) -> tuple[RuleState, list[RuleEvent]]:
    """Fold :func:`evaluate` over ``(ts_ms, value, quality)`` tuples, sorted here by time."""
    events: list[RuleEvent] = []
    for ts_ms, value, quality in sorted(readings, key=lambda r: r[0]):
        state, new = evaluate(rule, state, ts_ms, value, quality)
        events.extend(new)
    return state, events
