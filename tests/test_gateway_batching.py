"""Telemetry batches the gateway builds stay inside what ingest accepts."""

from __future__ import annotations

from fwcore.contract import MAX_PAYLOAD_BYTES, Batch, Point, encode_batch
from gateway.agent import POINTS_PER_BATCH


def test_a_full_batch_of_longest_names_fits_ingests_payload_limit() -> None:
    """A telemetry batch of POINTS_PER_BATCH points with 64-character names stays under MAX_PAYLOAD_BYTES."""
    name = "x" * 64
    points = [Point(name, name, 1_767_225_600_123, -1.2345678901234567e-300, 7)] * POINTS_PER_BATCH
    assert len(encode_batch(Batch(name, name, 2**62, points, sent_at=1_767_225_600_123))) < MAX_PAYLOAD_BYTES
