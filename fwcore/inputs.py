"""Types for values a client sends, checked where they enter (pure; pydantic only).

Each one refuses, with a message saying what to send instead, a value that would otherwise get as
far as the database or the standard library and fail there as a server error:

* :class:`Input` — the base of every request body: each text in it, however deep (dict keys,
  lists, nested models), is checked as :data:`Text` is.
* :data:`Text` — no NUL character (PostgreSQL text cannot hold one) and no unpaired UTF-16
  surrogate (``"\\ud800"`` is valid JSON but not encodable as UTF-8).
* :data:`Instant` — a time between :data:`EARLIEST` and :data:`LATEST`, with a real UTC offset
  (-12:00 to +14:00); a time without an offset is taken as UTC (what a person typing a URL means).
  :data:`AwareInstant` requires the offset.
* :data:`Seconds` — a positive duration of at most :data:`MAX_SECONDS` (ten years).
* :data:`Quantity` — a count of at least 1 that fits a PostgreSQL ``integer``.
* :data:`DbInt` — any integer a PostgreSQL ``bigint`` column holds (ids, offsets).

API request models and the domains' own input models use them; ``fieldwatch.api.app`` turns what
slips past them (psycopg's data errors) into a 422 too, as a last resort.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, Field, field_validator

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_SECONDS",
    "AwareInstant",
    "DbInt",
    "Input",
    "Instant",
    "Quantity",
    "Seconds",
    "Text",
    "check_instant",
    "check_text",
]

#: The earliest and latest time the API accepts (the database holds more; nothing we store is older).
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(3000, 1, 1, tzinfo=UTC)
#: The longest duration accepted, in seconds: ten years.
MAX_SECONDS: Final = 10 * 366 * 86400
#: The UTC offsets in use on Earth (the standard library accepts up to ±23:59).
MIN_OFFSET: Final = timedelta(hours=-12)
MAX_OFFSET: Final = timedelta(hours=14)
INT4_MAX: Final = 2**31 - 1
INT8_MAX: Final = 2**63 - 1

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


def check_text(value: str) -> str:
    """``value`` unchanged, or ``ValueError`` if it holds a NUL character or an unpaired surrogate."""
    found = _BAD_CHAR.search(value)
    if found is None:
        return value
    char = found.group()
    if char == "\x00":
        raise ValueError("must not contain NUL characters (\\u0000)")
    raise ValueError(f"must not contain an unpaired surrogate (\\u{ord(char):04x}); send valid UTF-8 text")


def check_instant(value: datetime, *, require_offset: bool = False) -> datetime:
    """``value`` as an aware datetime within [EARLIEST, LATEST), or ``ValueError`` saying what is wrong."""
    offset = value.utcoffset()
    if offset is None:
        if require_offset:
            raise ValueError("needs a UTC offset, e.g. 2026-01-31T08:00:00Z or 2026-01-31T09:00:00+01:00")
        value, offset = value.replace(tzinfo=UTC), timedelta(0)
    if not MIN_OFFSET <= offset <= MAX_OFFSET:
        raise ValueError("UTC offset must be between -12:00 and +14:00")
    # Compare the wall-clock time shifted by the offset: converting a time near year 1 to UTC overflows.
    wall = value.replace(tzinfo=None)
    if not EARLIEST.replace(tzinfo=None) + offset <= wall < LATEST.replace(tzinfo=None) + offset:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return value


def _aware(value: datetime) -> datetime:
    return check_instant(value, require_offset=True)


Text = Annotated[str, AfterValidator(check_text)]
Instant = Annotated[datetime, AfterValidator(check_instant)]
AwareInstant = Annotated[datetime, AfterValidator(_aware)]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, description="seconds, at most ten years")]
Quantity = Annotated[int, Field(ge=1, le=INT4_MAX)]
DbInt = Annotated[int, Field(ge=-INT8_MAX - 1, le=INT8_MAX)]


def _check_texts(value: Any) -> None:
    """``check_text`` on every string inside ``value`` (containers and models walked)."""
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_texts(key)
            _check_texts(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _check_texts(item)
    elif isinstance(value, BaseModel):
        for item in value.__dict__.values():
            _check_texts(item)


class Input(BaseModel):
    """The base of request bodies: no text anywhere in one may hold NUL or an unpaired surrogate.

    The check is per field, so a refusal names the field (``["body", "attributes"]``).
    """

    @field_validator("*", mode="after")
    @classmethod
    def _no_unstorable_text(cls, value: Any) -> Any:
        _check_texts(value)
        return value
