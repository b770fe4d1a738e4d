"""SLA clocks. Pure: business hours, holidays and paused states turn wall-clock time into the
minutes that count against a target.

A :class:`BusinessCalendar` says when the clock runs: opening hours per weekday (in the policy's
time zone) minus holidays; an empty ``hours`` mapping means around the clock. A ticket's clock
also stops while the ticket sits in a *paused* status (e.g. ``waiting_customer`` in other systems;
here typically ``on_site`` for the response clock is irrelevant, so policies choose). The clock is
computed from the ticket's status history, so it is right after any restart.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_DAY = timedelta(days=1)


@dataclass(frozen=True)
class BusinessCalendar:
    """When SLA clocks run. ``hours``: weekday (0 = Monday) → (opens, closes), local time."""

    tz: str = "UTC"
    hours: Mapping[int, tuple[time, time]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def open_intervals(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The parts of [start, end) when the clock runs."""
        if end <= start:
            return []
        if not self.hours and not self.holidays:
            return [(start, end)]
        zone = self._zone()
        out: list[tuple[datetime, datetime]] = []
        day = start.astimezone(zone).date() - _DAY
        last = end.astimezone(zone).date()
        while day <= last:
            if day not in self.holidays:
                if self.hours:
                    span = self.hours.get(day.weekday())
                    if span is not None:
                        o = datetime.combine(day, span[0], zone)
                        c = datetime.combine(day, span[1], zone)
                        _clip(out, o, c, start, end)
                else:
                    _clip(
                        out,
                        datetime.combine(day, time(0), zone),
                        datetime.combine(day + _DAY, time(0), zone),
                        start,
                        end,
                    )
            day += _DAY
        return out

    def minutes_between(self, start: datetime, end: datetime) -> float:
        """Business minutes in [start, end)."""
        return sum((b - a).total_seconds() for a, b in self.open_intervals(start, end)) / 60.0

    def add_minutes(self, start: datetime, minutes: float, max_days: int = 366) -> datetime:
        """The instant when ``minutes`` business minutes have passed after ``start``."""
        left = timedelta(minutes=minutes)
        cursor = start
        for _ in range(max_days):
            for a, b in self.open_intervals(cursor, cursor + _DAY):
                if b - a >= left:
                    return a + left
                left -= b - a
            cursor += _DAY
        raise ValueError(f"the calendar has fewer than {minutes} business minutes in {max_days} days")


def _clip(out: list[tuple[datetime, datetime]], o: datetime, c: datetime, start: datetime, end: datetime) -> None:
    a, b = max(o, start), min(c, end)
    if a < b:
        out.append((a, b))


@dataclass(frozen=True, slots=True)
class Target:
    """Response and resolution targets (business minutes) for one segment and priority."""

    response_minutes: int
    resolution_minutes: int


def elapsed_minutes(
    calendar: BusinessCalendar,
    history: Sequence[tuple[datetime, str]],
    until: datetime,
    paused: Collection[str] = (),
) -> float:
    """Business minutes the clock ran from the first status in ``history`` to ``until``, skipping
    time spent in ``paused`` statuses. ``history``: (since, status) in time order."""
    total = 0.0
    for i, (since, status) in enumerate(history):
        end = history[i + 1][0] if i + 1 < len(history) else until
        end = min(end, until)
        if status not in paused and end > since:
            total += calendar.minutes_between(since, end)
    return total


def due_at(
    calendar: BusinessCalendar,
    history: Sequence[tuple[datetime, str]],
    target_minutes: float,
    now: datetime,
    paused: Collection[str] = (),
) -> datetime | None:
    """When the clock reaches ``target_minutes``: the past instant it did, or — if the clock keeps
    running from ``now`` — the future one; None while the ticket is paused (the due time moves)."""
    left = timedelta(minutes=target_minutes)
    for i, (since, status) in enumerate(history):
        end = min(history[i + 1][0] if i + 1 < len(history) else now, now)
        if status in paused:
            continue
        for a, b in calendar.open_intervals(since, end):
            if b - a >= left:
                return a + left
            left -= b - a
    if history and history[-1][1] in paused:
        return None
    return calendar.add_minutes(now, left.total_seconds() / 60.0)
