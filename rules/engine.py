"""The one rule state machine: a pure function of (rule, state, reading) → (state, events).

Live evaluation (:mod:`rules.service`) and backtests (:mod:`rules.backtest`) call the same
:func:`evaluate`, so a rule behaves identically in both. Time is *source* time (the
reading's ``ts_ms``), never the wall clock: durations are measured between readings.

Phases::

    normal ──hit──▶ pending ──hit, held ≥ for_ms and ≥ count readings──▶ active
       ▲               │                                                 │ nothing holds
       └────no hit─────┘                                                 ▼ for ≥ keep_ms
                                     normal ◀──────────── AlarmCleared ──┘

* A *hit* is the most severe level whose trigger condition holds for the reading's signal
  (the value, or for ``rate`` rules the change per ``per`` since the previous good reading).
* While active, a level *holds* if it triggers, or — for the current level and the ones
  below it — if its clear condition is not yet met (hysteresis). The most severe holding
  level is the alarm's severity: going up or down emits :class:`SeverityChanged` at once
  (the duration and count gate only the start of an episode).
* When no level holds, the alarm clears — after ``keep_ms`` more source time without any
  level holding (keep-firing-for), at the first reading that reaches it.
* Readings with ``ts_ms <= last_ts_ms`` are ignored (no time travel; redeliveries are
  harmless). Bad-quality readings are ignored entirely.
* ``peak`` is the signal furthest into the alarm region during the episode.

:func:`triggers` and :func:`rate_of_change` take one signal or a numpy array of them, so the
vectorised backtest (:mod:`rules.replay`) decides "this reading trips a level" with the very
expressions live evaluation uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, overload

from rules.compile import CLevel, CompiledRule

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

Phase = Literal["normal", "pending", "active"]
STATE_FORMAT = 2  # bump when the JSON shape changes; from_json refuses unknown formats


class StateFormatError(ValueError):
    """Stored rule state is not in a format this code understands."""


@dataclass(frozen=True, slots=True)
class RuleState:
    """Evaluation state of one rule on one device; stored as JSON in ``rule_states.state``."""

    phase: Phase = "normal"
    since_ms: int | None = None  # source time the condition began holding (pending/active)
    last_ts_ms: int | None = None  # newest good reading evaluated
    peak: float | None = None  # worst signal of the current episode
    severity: str | None = None  # current level (pending: the latest hit; active: the alarm's)
    count: int = 0  # good readings in a row that hit (pending)
    clear_since_ms: int | None = None  # active, nothing holding since (keep-firing-for)
    last_value: float | None = None  # the newest good value (rate rules)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_FORMAT,
            "phase": self.phase,
            "since_ms": self.since_ms,
            "last_ts_ms": self.last_ts_ms,
            "peak": self.peak,
            "severity": self.severity,
            "count": self.count,
            "clear_since_ms": self.clear_since_ms,
            "last_value": self.last_value,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleState:
        if data.get("v") not in (1, STATE_FORMAT) or data.get("phase") not in ("normal", "pending", "active"):
            raise StateFormatError(f"unknown rule state {data!r}")
        return cls(
            phase=data["phase"],
            since_ms=data.get("since_ms"),
            last_ts_ms=data.get("last_ts_ms"),
            peak=data.get("peak"),
            severity=data.get("severity"),
            count=data.get("count", 1 if data["phase"] != "normal" else 0),
            clear_since_ms=data.get("clear_since_ms"),
            last_value=data.get("last_value"),
        )


@dataclass(frozen=True, slots=True)
class AlarmOpened:
    """The condition held long enough: an alarm should open."""

    ts_ms: int  # source time of the reading that completed the duration/count
    value: float  # that reading's value
    since_ms: int  # when the condition started holding
    peak: float
    severity: str = "major"


@dataclass(frozen=True, slots=True)
class SeverityChanged:
    """An active alarm moved to another rung of its ladder."""

    ts_ms: int
    value: float
    severity: str
    previous: str


@dataclass(frozen=True, slots=True)
class AlarmCleared:
    """No level held (for keep-firing-for) while an alarm was open."""

    ts_ms: int
    value: float
    peak: float | None


RuleEvent = AlarmOpened | SeverityChanged | AlarmCleared
NORMAL = RuleState()


@overload
def triggers(rule: CompiledRule, lv: CLevel, s: float) -> bool: ...
@overload
def triggers(rule: CompiledRule, lv: CLevel, s: NDArray[np.float64]) -> NDArray[np.bool_]: ...
def triggers(rule: CompiledRule, lv: CLevel, s: Any) -> Any:
    """Whether the signal ``s`` trips level ``lv``; elementwise when ``s`` is an array (hence ``|`` and ``&``)."""
    k = rule.kind
    if k == "above" or k == "rate":
        return s >= lv.a if rule.inclusive else s > lv.a
    if k == "below":
        return s <= lv.a if rule.inclusive else s < lv.a
    if k == "outside":
        return (s < lv.a) | (s > lv.b)
    return (lv.a <= s) & (s <= lv.b)  # inside


def _stays(rule: CompiledRule, lv: CLevel, s: float) -> bool:
    """Whether a level already reached is not yet cleared (hysteresis: the clear threshold)."""
    if lv.ca == lv.a and lv.cb == lv.b:
        return triggers(rule, lv, s)
    k = rule.kind
    if k == "above" or k == "rate":
        return s > lv.ca
    if k == "below":
        return s < lv.ca
    if k == "outside":
        return s < lv.ca or s > lv.cb
    return lv.ca <= s <= lv.cb


def badness(rule: CompiledRule, s: float) -> float:
    """How far ``s`` is into the alarm region (bigger is worse); used for ``peak``."""
    k = rule.kind
    if k == "above" or k == "rate":
        return s
    if k == "below":
        return -s
    lv = rule.levels[-1]
    if k == "outside":
        return max(lv.a - s, s - lv.b)
    return min(s - lv.a, lv.b - s)


def _worse(rule: CompiledRule, peak: float | None, s: float) -> float:
    if peak is None:
        return s
    return s if badness(rule, s) > badness(rule, peak) else peak


@overload
def rate_of_change(rule: CompiledRule, dv: float, dt_ms: int) -> float: ...
@overload
def rate_of_change(rule: CompiledRule, dv: NDArray[np.float64], dt_ms: NDArray[np.int64]) -> NDArray[np.float64]: ...
def rate_of_change(rule: CompiledRule, dv: Any, dt_ms: Any) -> Any:
    """A ``rate`` rule's signal: the change ``dv`` over ``dt_ms`` per ``per``, signed by ``direction``; elementwise
    on arrays."""
    rate = dv / (dt_ms / 1000.0) * rule.per_s
    if rule.direction == "rise":
        return rate
    if rule.direction == "fall":
        return -rate
    return abs(rate)


def signal(rule: CompiledRule, state: RuleState, ts_ms: int, value: float) -> float | None:
    """The number the levels compare: the value, or the rate since the previous good reading."""
    if rule.kind != "rate":
        return value
    if state.last_ts_ms is None or state.last_value is None:
        return None
    return rate_of_change(rule, value - state.last_value, ts_ms - state.last_ts_ms)


def evaluate(
    rule: CompiledRule, state: RuleState, ts_ms: int, value: float, quality: int = 0
) -> tuple[RuleState, list[RuleEvent]]:
    """Advance ``state`` by one reading; returns the new state and the events it caused."""
    if quality != 0:
        return state, []
    if state.last_ts_ms is not None and ts_ms <= state.last_ts_ms:
        return state, []
    s = signal(rule, state, ts_ms, value)
    if s is None:  # first reading of a rate rule: nothing to compare yet
        return replace(state, last_ts_ms=ts_ms, last_value=value), []
    if state.phase == "active":
        return _active(rule, state, replace(state, last_ts_ms=ts_ms, last_value=value), ts_ms, value, s)
    hit = next((lv for lv in rule.levels if triggers(rule, lv, s)), None)
    if hit is None:  # the common case, kept cheap: no copy of the old state
        return RuleState(last_ts_ms=ts_ms, last_value=value), []
    moved = replace(state, last_ts_ms=ts_ms, last_value=value)
    if state.phase == "normal":
        pending = replace(moved, phase="pending", since_ms=ts_ms, peak=s, severity=hit.severity, count=1)
    else:
        pending = replace(moved, peak=_worse(rule, state.peak, s), severity=hit.severity, count=state.count + 1)
    assert pending.since_ms is not None and pending.peak is not None
    if ts_ms - pending.since_ms < rule.for_ms or pending.count < rule.count:
        return pending, []
    opened = AlarmOpened(ts_ms, value, pending.since_ms, pending.peak, hit.severity)
    return replace(pending, phase="active"), [opened]


def _active(
    rule: CompiledRule, state: RuleState, moved: RuleState, ts_ms: int, value: float, s: float
) -> tuple[RuleState, list[RuleEvent]]:
    current = rule.levels[-1].rank if state.severity is None else _rank(state.severity)
    now = next(
        (lv for lv in rule.levels if triggers(rule, lv, s) or (lv.rank >= current and _stays(rule, lv, s))),
        None,
    )
    if now is not None:
        new = replace(moved, peak=_worse(rule, state.peak, s), clear_since_ms=None, severity=now.severity)
        if state.severity is not None and now.severity != state.severity:
            return new, [SeverityChanged(ts_ms, value, now.severity, state.severity)]
        return new, []
    if rule.keep_ms > 0:
        since = ts_ms if state.clear_since_ms is None else state.clear_since_ms
        if ts_ms - since < rule.keep_ms:
            return replace(moved, clear_since_ms=since), []
    return RuleState(last_ts_ms=ts_ms, last_value=value), [AlarmCleared(ts_ms, value, state.peak)]


_RANKS = {"critical": 0, "major": 1, "minor": 2, "warning": 3}


def _rank(severity: str) -> int:
    return _RANKS.get(severity, 3)


def quiet_band(rule: CompiledRule) -> tuple[float, float] | None:
    """``(lo, hi)`` such that a signal with ``lo < s < hi`` triggers no level of ``rule``; None if no such band.

    From the ``normal`` phase such a reading changes nothing that :func:`durable_change` keeps and emits no
    event, so live evaluation may defer it (the batch's alarm-producing pairs commit first). Conservative:
    the boundaries count as triggering. ``rate`` and ``inside`` rules have no band (always evaluated).
    """
    k = rule.kind
    if not rule.levels:
        return None
    if k == "above":
        return (-math.inf, min(lv.a for lv in rule.levels))
    if k == "below":
        return (max(lv.a for lv in rule.levels), math.inf)
    if k == "outside":
        lo, hi = max(lv.a for lv in rule.levels), min(lv.b for lv in rule.levels)
        return (lo, hi) if lo < hi else None
    return None


def durable_change(old: RuleState, new: RuleState, *, rate: bool = False) -> bool:
    """Whether ``new`` must be stored for a restart (or another worker) to continue correctly.

    What a reading leaves in flight must survive: the phase, when the condition began, the count, the
    peak, the severity and when keep-firing began. ``last_ts_ms`` alone need not: a reading that changed
    nothing else, evaluated again from ``old``, changes nothing again (no events). ``rate`` rules compare
    with the previous value, so for them everything counts.
    """
    if old is new:
        return False
    if rate or old.phase != new.phase:
        return old != new
    return (old.since_ms, old.count, old.peak, old.severity, old.clear_since_ms) != (
        new.since_ms,
        new.count,
        new.peak,
        new.severity,
        new.clear_since_ms,
    )


def evaluate_all(
    rule: CompiledRule, state: RuleState, readings: list[tuple[int, float, int]]
) -> tuple[RuleState, list[RuleEvent]]:
    """Fold :func:`evaluate` over ``(ts_ms, value, quality)`` tuples, sorted here by time."""
    events: list[RuleEvent] = []
    for ts_ms, value, quality in sorted(readings, key=lambda r: r[0]):
        state, new = evaluate(rule, state, ts_ms, value, quality)
        if new:
            events.extend(new)
    return state, events
