"""A fixed world for the pure ingest checks: a registry snapshot, limits, "now", and point and batch builders.

Gateway ``gw-a`` (id 7, site ``site-a``) has pump-1 (101) and pump-2 (102); ``gw-b`` (id 8,
site ``site-b``) has pump-9 (109). Validation and the fast path are both checked against it.
"""

from __future__ import annotations

from fwcore.contract import Batch, Point
from ingest.validate import GatewayRef, Limits, RegistrySnapshot

#: 2026-01-01T00:00:00Z in epoch ms: "now" for every check.
NOW = 1_767_225_600_000
DAY = 86_400_000
LIMITS = Limits(max_future_seconds=300, retention_days=90)
REG = RegistrySnapshot(
    gateways={"gw-a": GatewayRef(7, "site-a"), "gw-b": GatewayRef(8, "site-b")},
    devices={(7, "pump-1"): 101, (7, "pump-2"): 102, (8, "pump-9"): 109},
)


def batch(points: list[Point], *, gateway: str = "gw-a", site: str = "site-a", seq: int = 1) -> Batch:
    """A batch from gateway ``gw-a`` of site ``site-a`` (by default) carrying ``points``."""
    return Batch(gateway=gateway, site=site, seq=seq, points=points)


def p(device: str = "pump-1", ts: int = NOW, tag: str = "temp") -> Point:
    """One point, value 1.0, of a registered device at :data:`NOW` unless told otherwise."""
    return Point(device, tag, ts, 1.0)
