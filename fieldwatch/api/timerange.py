"""Reading the time parameters of a range request: ``from``/``to`` and durations (pure: ``now`` is passed in)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import Invalid

DEFAULT_SPAN = timedelta(hours=1)
_SPAN = re.compile(r"^(?P<n>[1-9][0-9]{0,6})(?P<unit>s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def as_utc(t: datetime) -> datetime:
    """``t`` with a time zone; a naive time is taken as UTC (what a person typing a URL means)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def resolve_range(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The half-open interval ``[start, end)`` to query.

    ``end`` defaults to ``now``; ``start`` defaults to one hour before ``end``.
    An empty or inverted interval is a client error, not an empty answer.
    """
    end = as_utc(end) if end is not None else now
    start = as_utc(start) if start is not None else end - DEFAULT_SPAN
    if start >= end:
        raise Invalid(f"`from` ({start.isoformat()}) must be before `to` ({end.isoformat()})", loc=("query", "from"))
    return start, end


def parse_span(text: str, *, loc: tuple[str, ...] = ("query", "bucket")) -> timedelta:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` -> a timedelta; anything else is a 422 naming the parameter."""
    found = _SPAN.match(text.strip())
    if not found:
        raise Invalid(f"{text!r} is not a duration; write a number and a unit: 30s, 5m, 1h, 1d", loc=loc)
    return timedelta(seconds=int(found["n"]) * _UNIT_S[found["unit"]])
