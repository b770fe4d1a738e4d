"""Resolving the ``from``/``to`` query of a range request (pure: ``now`` is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .errors import Invalid

DEFAULT_SPAN = timedelta(hours=1)


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
