"""Resolving the `from`/`to` of a range query (pure function, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from fieldwatch.api.errors import Invalid
from fieldwatch.api.timerange import resolve_range

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, (NOW - H, NOW)),
        (None, NOW - 5 * H, (NOW - 6 * H, NOW - 5 * H)),
        (NOW - 3 * H, None, (NOW - 3 * H, NOW)),
        (datetime(2026, 3, 1, 9, 0), None, (datetime(2026, 3, 1, 9, 0, tzinfo=UTC), NOW)),
        (
            datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))),
            None,
            (datetime(2026, 3, 1, 9, 0, tzinfo=UTC), NOW),
        ),
    ],
    ids=["defaults", "end-only", "start-only", "naive-is-utc", "offset-kept"],
)
def test_resolve_range(start: datetime | None, end: datetime | None, expected: tuple[datetime, datetime]) -> None:
    """`to` defaults to now, `from` to an hour before `to`; naive times are UTC."""
    assert resolve_range(start, end, NOW) == expected


@pytest.mark.parametrize("start", [NOW, NOW + H])
def test_empty_or_inverted_range_is_invalid(start: datetime) -> None:
    """`from` at or after `to` is a client error naming both times."""
    with pytest.raises(Invalid, match="must be before"):
        resolve_range(start, NOW, NOW)
