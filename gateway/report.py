"""Report-by-exception: decide, per tag, whether a fresh reading is worth sending.

Polling every second and publishing every value wastes the uplink on values
that did not move. A tag with a ``deadband`` is sent only when

* it is the first reading since the gateway started,
* its quality changed (a value going bad, or recovering, is always news),
* its value moved beyond the deadband from the **last value sent** (not the last
  value read, so a slow drift is reported once it has drifted far enough), or
* ``max_interval`` seconds have passed since it was last sent (a heartbeat, so a
  consumer can tell "steady" from "stale").

``deadband_mode: percent`` measures the move relative to the last sent value
(``|v - last| > deadband / 100 * |last|``; from 0 any change counts).
A deadband of 0 (the default) sends every reading — the old behaviour.

Pure logic: :class:`ExceptionFilter` holds the last sent (value, quality, time)
per key and is driven by the caller's clock; no I/O, no asyncio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

DeadbandMode = Literal["absolute", "percent"]


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """How one tag is reported. ``deadband=0`` means every reading is sent."""

    deadband: float = 0.0
    mode: DeadbandMode = "absolute"
    max_interval: float | None = None  # seconds; None: no heartbeat (only changes are sent)

    @property
    def every_reading(self) -> bool:
        return self.deadband <= 0


def moved(last: float, value: float, policy: ReportPolicy) -> bool:
    """Did ``value`` leave the deadband around ``last`` (the last value sent)?"""
    delta = abs(value - last)
    if math.isnan(delta):  # NaN never equals anything; treat as a change
        return True
    if policy.mode == "percent":
        if last == 0:
            return delta > 0
        return delta > policy.deadband / 100.0 * abs(last)
    return delta > policy.deadband


class ExceptionFilter:
    """Remembers what was last sent per key (e.g. ``(device, tag)``) and filters new readings."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[object, tuple[float, int, float]] = {}

    def should_send(self, key: object, value: float, quality: int, now: float, policy: ReportPolicy) -> bool:
        """True when this reading must be sent; records it as sent if so. ``now`` is in seconds."""
        last = self._last.get(key)
        if (
            policy.every_reading
            or last is None
            or quality != last[1]
            or (policy.max_interval is not None and now - last[2] >= policy.max_interval)
            or moved(last[0], value, policy)
        ):
            self._last[key] = (value, quality, now)
            return True
        return False

    def forget(self, key: object) -> None:
        """Drop a key's memory so its next reading is sent (a device reconfigured or removed)."""
        self._last.pop(key, None)

    def __len__(self) -> int:
        return len(self._last)
