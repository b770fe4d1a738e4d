"""What a gateway's status says about the data of it that was not stored (pure, no I/O).

A gateway can look healthy (connected, publishing, acked) while ingest refuses its points: a
device nobody registered, a clock in the future. The server's view of a gateway therefore lists,
from its dead letters and held points, one sentence per problem::

    4 points rejected since 2026-03-01T10:00:00Z: unknown device 'pump-9'
    1 message rejected since 2026-03-01T10:02:13Z: invalid_json
    device 'pump-7' is not registered: 120 points held since 2026-03-01T09:58:00Z (accept or reject
        discovered device 12)

and a gateway with any of them is not reported healthy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

#: What each point-level reason says about the devices it names.
_POINT_REASONS = {
    "unknown_device": "unknown device",
    "hold_full": "hold full for unregistered device",
    "hold_expired": "held too long for unregistered device",
    "rejected_device": "rejected device",
    "future_timestamp": "timestamps in the future from device",
    "too_old": "timestamps older than retention from device",
    "invalid_name": "empty device or tag names",
    "conflicting_value": "conflicting values from device",
}


@dataclass(frozen=True, slots=True)
class RejectionSummary:
    """A gateway's dead letters of one reason: how many rows and points, since when, from which devices."""

    reason: str
    messages: int
    points: int
    since: datetime
    last: datetime
    devices: list[str]


@dataclass(frozen=True, slots=True)
class PendingDevice:
    """A discovered device of the gateway that waits for a decision, with the points it holds."""

    id: int
    key: str
    held_points: int
    since: datetime


def _when(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _names(devices: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(d) for d in devices[:limit])
    return shown + (f" and {len(devices) - limit} more" if len(devices) > limit else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def describe(r: RejectionSummary) -> str:
    """One sentence for one reason's dead letters."""
    if not r.points:
        return f"{_plural(r.messages, 'message')} rejected since {_when(r.since)}: {r.reason}"
    phrase = _POINT_REASONS.get(r.reason)
    if phrase is None:  # a reason without its own phrase: name it, and the devices
        what = r.reason + (
            f" ({'devices' if len(r.devices) > 1 else 'device'} {_names(r.devices)})" if r.devices else ""
        )
    elif r.devices and r.reason != "invalid_name":
        plural = "s" if len(r.devices) > 1 and phrase.endswith("device") else ""
        what = f"{phrase}{plural} {_names(r.devices)}"
    else:
        what = phrase
    return f"{_plural(r.points, 'point')} rejected since {_when(r.since)}: {what}"


def problems(rejections: Iterable[RejectionSummary], pending: Iterable[PendingDevice]) -> list[str]:
    """Every sentence for a gateway, oldest problem first: rejections, then devices waiting to be accepted."""
    out = [describe(r) for r in sorted(rejections, key=lambda r: (r.since, r.reason))]
    for d in sorted(pending, key=lambda d: (d.since, d.key)):
        held = f"{_plural(d.held_points, 'point')} held" if d.held_points else "nothing held yet"
        out.append(
            f"device {d.key!r} is not registered: {held} since {_when(d.since)} "
            f"(accept or reject discovered device {d.id})"
        )
    return out
