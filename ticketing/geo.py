"""Distances and travel times. Pure; travel sits behind :class:`TravelModel` so a routing
service (OSRM, a matrix API, a learned model) can replace the great-circle estimate later."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

LatLon = tuple[float, float]
EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


def haversine_km(a: LatLon, b: LatLon) -> float:
    """Great-circle distance between two (lat, lon) points in degrees, in kilometres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


class TravelModel(Protocol):
    """Road distance and driving time between two points."""

    def travel(self, from_latlon: LatLon, to_latlon: LatLon) -> tuple[float, float]:
        """``(km, minutes)`` from ``from_latlon`` to ``to_latlon``."""
        ...


@dataclass(frozen=True, slots=True)
class GreatCircleTravel:
    """Straight-line distance stretched by a detour factor, driven at a constant average speed."""

    speed_kmh: float = 50.0
    detour_factor: float = 1.3

    def __post_init__(self) -> None:
        if self.speed_kmh <= 0 or self.detour_factor < 1:
            raise ValueError("speed_kmh must be > 0 and detour_factor >= 1")

    def travel(self, from_latlon: LatLon, to_latlon: LatLon) -> tuple[float, float]:
        km = haversine_km(from_latlon, to_latlon) * self.detour_factor
        return km, km / self.speed_kmh * 60.0
