"""What ingest hands to the code that runs after a commit (rules, live views).

Kept in its own tiny module so consumers of committed points (``rules/``) can
import it without pulling in paho or psycopg.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CommittedPoint:
    """One reading that is durably stored in ``telemetry`` (first time only, never a redelivery)."""

    series_id: int
    device_id: int
    device_key: str
    gateway_id: int
    tag: str
    ts_ms: int
    value: float
    quality: int
    #: Replayed backlog: must not overwrite a live "current value".
    historical: bool
