"""A committed reading as ingest's after-commit hook hands it to rules and ticketing.

Only the fields those consumers read (ingest's own type is ``ingest.points.CommittedPoint``, which also
carries series, device key and gateway ids the tests have no use for).
"""

from __future__ import annotations

from dataclasses import dataclass

#: A fixed reading time for tests that replay history: 2023-11-14T22:13:20Z in epoch ms.
T0 = 1_700_000_000_000


@dataclass(frozen=True)
class Point:
    """One stored reading: device id, tag, time (epoch ms), value, quality code, replayed backlog or not."""

    device_id: int
    tag: str
    ts_ms: int
    value: float
    quality: int = 0
    historical: bool = False
