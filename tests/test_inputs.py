"""The checked input types (fwcore.inputs), without the API: where each bound lies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from fwcore.inputs import EARLIEST, LATEST, AwareInstant, Input, Instant, Text, check_instant, check_text


def test_text_refuses_nul_and_lone_surrogates_but_not_pairs() -> None:
    """NUL and an unpaired surrogate of either half are refused; an emoji is ordinary text."""
    assert check_text("hot \N{FIRE}") == "hot \N{FIRE}"
    for bad in ("a\x00", "\ud800", "x\udfff"):
        with pytest.raises(ValueError, match=r"NUL|surrogate"):
            check_text(bad)
    with pytest.raises(ValidationError):
        TypeAdapter(Text).validate_python("a\x00b")


def test_instants_lie_between_the_bounds_whatever_the_offset() -> None:
    """The bounds are instants: +14:00 and -12:00 wall times are compared after their offset, without overflow."""
    plus14, minus12 = timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))
    assert check_instant(EARLIEST.astimezone(plus14)) == EARLIEST
    assert check_instant(EARLIEST.astimezone(minus12)) == EARLIEST
    for t in (
        EARLIEST - timedelta(seconds=1),
        LATEST,
        datetime(1, 1, 1, tzinfo=plus14),
        datetime(1, 1, 1, tzinfo=minus12),
    ):
        with pytest.raises(ValueError, match="must be between"):
            check_instant(t)
    with pytest.raises(ValueError, match="UTC offset"):
        check_instant(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59))))


def test_a_time_without_offset_is_utc_unless_an_offset_is_required() -> None:
    """Instant reads a naive time as UTC; AwareInstant refuses it."""
    assert TypeAdapter(Instant).validate_python("2026-01-01T08:00:00") == datetime(2026, 1, 1, 8, tzinfo=UTC)
    with pytest.raises(ValidationError, match="needs a UTC offset"):
        TypeAdapter(AwareInstant).validate_python("2026-01-01T08:00:00")


def test_input_models_check_every_text_however_deep() -> None:
    """An Input model refuses NUL in a nested dict key or list item, naming the field."""

    class Body(Input):
        name: str
        attributes: dict[str, object]

    Body(name="ok", attributes={"a": ["b", {"c": "d"}]})
    with pytest.raises(ValidationError) as err:
        Body(name="ok", attributes={"a": ["b", {"c\x00": "d"}]})
    assert err.value.errors()[0]["loc"] == ("attributes",)
