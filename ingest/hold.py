"""Holding the data of devices nobody registered: the bounds, and what becomes of each point (pure, no I/O).

A gateway that sends points for a device the registry does not know is usually right and the
registry is late: a field engineer wired a new pump and has not registered it yet. Those points are
*held* (``held_points``) under a *discovered* device until someone accepts it (then they are stored)
or rejects it (then they are dead-lettered). Holding is bounded, and whatever the bound refuses is
dead-lettered with its reason, never dropped:

* ``max_points`` per discovered device: points beyond it are dead-lettered as ``hold_full``;
* ``max_age_s``: the expiry job dead-letters points held longer as ``hold_expired``;
* ``max_devices`` pending discovered devices per gateway: points of a further unknown device are
  dead-lettered as ``unknown_device`` (a gateway config full of typos must not fill the database).

A point whose timestamp could never be stored (in the future or older than retention) is not held
either: it stays an ``unknown_device`` dead letter, and replaying it once the device is registered
gives the timestamp reason.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fwcore.contract import Point
from ingest.validate import Limits, Rejection

_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class HoldLimits:
    """The bounds of holding (from ``Settings``: ``discovery_*``). ``max_points`` 0 turns holding off."""

    max_points: int = 100_000
    max_age_s: float = 168 * 3600.0
    max_devices: int = 100
    warn_ratio: float = 0.8

    @classmethod
    def from_settings(cls, settings: Any) -> HoldLimits:
        return cls(
            max_points=settings.discovery_hold_max_points,
            max_age_s=settings.discovery_hold_max_hours * 3600.0,
            max_devices=settings.discovery_max_devices,
            warn_ratio=settings.discovery_hold_warn_ratio,
        )

    @property
    def enabled(self) -> bool:
        """Whether unknown devices are discovered and their points held at all."""
        return self.max_points > 0 and self.max_devices > 0

    @property
    def warn_at(self) -> int:
        """Held points from which ingest warns that a device's hold is near its bound."""
        return max(1, math.ceil(self.max_points * self.warn_ratio))


@dataclass(slots=True)
class HoldWrite:
    """Points of one unregistered device from one message, to be held (or stored, if it is registered by now)."""

    topic: str
    site: str
    gateway: str  # slug
    gateway_id: int
    device: str  # the device key the gateway publishes
    seq: int | None  # the message's sequence (kept in dead letters; None: not from a gateway's sequence)
    historical: bool
    sent_at: int
    points: list[Point]


def holds_of(
    rejections: list[Rejection],
    *,
    topic: str,
    site: str,
    gateway: str,
    gateway_id: int,
    seq: int | None,
    historical: bool,
    sent_at: int,
    now_ms: int,
    limits: Limits,
) -> tuple[list[HoldWrite], list[Rejection]]:
    """Split a verdict's rejections into holds (one per unknown device) and the rejections left to dead-letter.

    Only ``unknown_device`` points whose timestamps are storable are held; the rest of that
    rejection stays a rejection, with the same reason.
    """
    latest = now_ms + limits.max_future_seconds * 1000
    oldest = now_ms - limits.retention_days * _MS_PER_DAY
    holds: dict[str, list[Point]] = defaultdict(list)
    rest: list[Rejection] = []
    for r in rejections:
        if r.reason != "unknown_device" or not r.points:
            rest.append(r)
            continue
        unstorable = []
        for p in r.points:
            if oldest <= p.ts <= latest:
                holds[p.device].append(p)
            else:
                unstorable.append(p)
        if unstorable:
            detail = (
                f"{len(unstorable)} point(s) from devices not registered on gateway {gateway!r}, "
                f"not held: their timestamps are outside the {limits.retention_days}-day retention "
                f"or more than {limits.max_future_seconds} s ahead"
            )
            rest.append(Rejection("unknown_device", detail, tuple(unstorable)))
    writes = [
        HoldWrite(topic, site, gateway, gateway_id, device, seq, historical, sent_at, pts)
        for device, pts in sorted(holds.items())
    ]
    return writes, rest


def split_room(points: list[Point], held: int, limits: HoldLimits) -> tuple[list[Point], list[Point]]:
    """(points that fit in a hold already holding ``held``, points beyond ``max_points``), in message order."""
    room = max(0, limits.max_points - held)
    return points[:room], points[room:]


def near_bound(held: int, limits: HoldLimits) -> bool:
    """Whether a hold of ``held`` points is at or past the warning ratio of its bound."""
    return limits.max_points > 0 and held >= limits.warn_at


def fill_ratio(held: int, limits: HoldLimits) -> float:
    """``held`` as a fraction of ``max_points`` (1.0 when holding is off)."""
    return min(1.0, held / limits.max_points) if limits.max_points > 0 else 1.0
