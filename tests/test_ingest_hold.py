"""Pure logic of discovery: which refused points are held, the hold's bounds, what a status announces, and the
sentences a gateway's status gives for its rejections."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from fwcore.contract import encode_status
from ingest.announce import DeviceAnnouncement, parse_announcements
from ingest.hold import HoldLimits, fill_ratio, holds_of, near_bound, split_room
from ingest.rejections import PendingDevice, RejectionSummary, describe, problems
from ingest.validate import validate_batch
from tests.support.validation import DAY, LIMITS, NOW, REG, batch, p


def _holds(points):
    v = validate_batch(batch(points), site="site-a", gateway="gw-a", registry=REG, now_ms=NOW, limits=LIMITS)
    return holds_of(
        v.rejections,
        topic="t",
        site="site-a",
        gateway="gw-a",
        gateway_id=7,
        seq=1,
        historical=False,
        sent_at=0,
        now_ms=NOW,
        limits=LIMITS,
    )


def test_unknown_device_points_are_held_per_device_and_other_rejections_stay() -> None:
    """Each unknown device gets one hold with its points; other reasons stay rejections untouched."""
    holds, rest = _holds([p(device="pump-3"), p(device="pump-4"), p(device="pump-3", tag="flow"), p(tag="")])
    assert [(h.device, [x.tag for x in h.points]) for h in holds] == [
        ("pump-3", ["temp", "flow"]),
        ("pump-4", ["temp"]),
    ]
    assert all(h.gateway_id == 7 and h.seq == 1 for h in holds)
    assert [r.reason for r in rest] == ["invalid_name"]


@pytest.mark.parametrize(
    ("ts", "held"),
    [(NOW, True), (NOW + 300_000, True), (NOW + 300_001, False), (NOW - 90 * DAY, True), (NOW - 90 * DAY - 1, False)],
)
def test_a_point_that_could_never_be_stored_is_not_held(ts: int, held: bool) -> None:
    """Unknown-device points outside the storable window stay unknown_device dead letters."""
    holds, rest = _holds([p(device="pump-3", ts=ts)])
    assert bool(holds) is held
    assert [r.reason for r in rest] == ([] if held else ["unknown_device"])
    if not held:
        assert "not held" in rest[0].detail


@pytest.mark.parametrize(
    ("held", "n", "fits", "beyond"), [(0, 3, 3, 0), (3, 3, 2, 1), (5, 2, 0, 2), (6, 1, 0, 1), (0, 0, 0, 0)]
)
def test_the_hold_takes_what_fits_and_refuses_the_rest(held: int, n: int, fits: int, beyond: int) -> None:
    """A hold of max_points takes points in message order until it is full."""
    points = [p(device="pump-3", ts=NOW + i) for i in range(n)]
    taken, refused = split_room(points, held, HoldLimits(max_points=5))
    assert (len(taken), len(refused)) == (fits, beyond) and taken + refused == points


@pytest.mark.parametrize(
    ("held", "near", "fill"), [(0, False, 0.0), (79, False, 0.79), (80, True, 0.8), (100, True, 1.0)]
)
def test_near_the_bound_is_the_warning_ratio(held: int, near: bool, fill: float) -> None:
    """At warn_ratio of max_points the hold is near its bound; the fill ratio is held over the bound."""
    limits = HoldLimits(max_points=100, warn_ratio=0.8)
    assert near_bound(held, limits) is near and fill_ratio(held, limits) == pytest.approx(fill)


def test_holding_is_off_with_no_room() -> None:
    """max_points or max_devices of 0 turns discovery off."""
    assert HoldLimits().enabled and not HoldLimits(max_points=0).enabled and not HoldLimits(max_devices=0).enabled


def test_a_status_announces_devices_with_profiles_tags_and_units() -> None:
    """Devices named in devices, profiles or tags are announced; units come from tags."""
    payload = encode_status(
        "online",
        gateway="gw-a",
        ts=NOW,
        devices={"pump-1": "online", "pump-2": "offline"},
        profiles={"pump-1": "pump-p100@1"},
        tags={"pump-1": {"flow": "m3/h", "status": ""}, "opc-1": {"temp": "degC"}},
    )
    got = parse_announcements(payload)
    assert got.devices == (
        DeviceAnnouncement("opc-1", "", {"temp": "degC"}),
        DeviceAnnouncement("pump-1", "pump-p100@1", {"flow": "m3/h", "status": ""}),
        DeviceAnnouncement("pump-2", "", {}),
    )
    assert got.problems == ()


def test_a_birth_announces_nothing_and_malformed_entries_are_named() -> None:
    """The short birth has no devices; a bad entry is skipped with a problem saying which, the rest counts."""
    assert parse_announcements(encode_status("online", gateway="gw-a", ts=NOW)).devices == ()
    payload = orjson.dumps(
        {
            "v": 1,
            "gateway": "gw-a",
            "state": "online",
            "ts": NOW,
            "devices": {"": "online", "pump-1": "online"},
            "tags": {"pump-1": {"flow": 3, "temp": "degC", "x": "u" * 33}, "pump-2": ["flow"]},
            "profiles": "pump-p100",
        }
    )
    got = parse_announcements(payload)
    assert got.devices == (DeviceAnnouncement("pump-1", "", {"temp": "degC"}), DeviceAnnouncement("pump-2", "", {}))
    text = " | ".join(got.problems)
    assert "'profiles' is not an object" in text and "device name ''" in text
    assert "tag 'flow' of device 'pump-1'" in text and "tag 'x'" in text and "tags of device 'pump-2'" in text


T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("summary", "sentence"),
    [
        (
            RejectionSummary("unknown_device", 2, 4, T0, T0, ["pump-9"]),
            "4 points rejected since 2026-03-01T10:00:00Z: unknown device 'pump-9'",
        ),
        (
            RejectionSummary("unknown_device", 2, 1, T0, T0, ["pump-8", "pump-9"]),
            "1 point rejected since 2026-03-01T10:00:00Z: unknown devices 'pump-8', 'pump-9'",
        ),
        (
            RejectionSummary("future_timestamp", 1, 3, T0, T0, ["pump-1"]),
            "3 points rejected since 2026-03-01T10:00:00Z: timestamps in the future from device 'pump-1'",
        ),
        (
            RejectionSummary("invalid_json", 1, 0, T0, T0, []),
            "1 message rejected since 2026-03-01T10:00:00Z: invalid_json",
        ),
        (
            RejectionSummary("write_failed", 2, 7, T0, T0, ["a"]),
            "7 points rejected since 2026-03-01T10:00:00Z: write_failed (device 'a')",
        ),
    ],
)
def test_each_reason_reads_as_one_sentence(summary: RejectionSummary, sentence: str) -> None:
    """A reason's dead letters become "N points rejected since T: what, which devices"."""
    assert describe(summary) == sentence


def test_problems_list_rejections_then_waiting_devices_oldest_first() -> None:
    """Rejections come oldest first, then each discovered device waiting for a decision."""
    later = T0.replace(hour=11)
    said = problems(
        [RejectionSummary("invalid_json", 1, 0, later, later, []), RejectionSummary("too_old", 1, 2, T0, T0, ["p"])],
        [PendingDevice(12, "pump-7", 120, T0), PendingDevice(13, "pump-8", 0, later)],
    )
    assert said == [
        "2 points rejected since 2026-03-01T10:00:00Z: timestamps older than retention from device 'p'",
        "1 message rejected since 2026-03-01T11:00:00Z: invalid_json",
        "device 'pump-7' is not registered: 120 points held since 2026-03-01T10:00:00Z "
        "(accept or reject discovered device 12)",
        "device 'pump-8' is not registered: nothing held yet since 2026-03-01T11:00:00Z "
        "(accept or reject discovered device 13)",
    ]
