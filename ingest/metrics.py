"""Prometheus metrics of ingest workers.

Module-level metrics in the default registry, labelled by ``worker`` (the MQTT
client id), so one ``/metrics`` endpoint shows every worker in the process and
creating several workers (tests, benchmarks) never registers a name twice.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("fieldwatch_ingest_messages", "MQTT messages taken off the queue and processed", ["worker", "kind"])
POINTS = Counter("fieldwatch_ingest_points", "Points newly stored in telemetry", ["worker"])
DUPLICATES = Counter("fieldwatch_ingest_duplicate_points", "Points already stored (redelivery)", ["worker"])
CONFLICTS = Counter(
    "fieldwatch_ingest_conflicting_points",
    "Points whose series and time were already stored with another value (the first is kept; "
    "these are dead-lettered as conflicting_value)",
    ["worker"],
)
DEAD_LETTERS = Counter("fieldwatch_ingest_dead_letters", "Dead-letter rows written, by reason", ["worker", "reason"])
COMMITS = Counter("fieldwatch_ingest_commits", "Transactions committed", ["worker"])
DB_ERRORS = Counter("fieldwatch_ingest_db_errors", "Failed write attempts (retried)", ["worker"])
SEQ_GAPS = Counter(
    "fieldwatch_ingest_sequence_gaps", "Gateway sequences skipped when seen (some may arrive later)", ["worker"]
)
SEQ_FILLED = Counter(
    "fieldwatch_ingest_sequence_gaps_filled", "Skipped gateway sequences that arrived later", ["worker"]
)
SEQ_MISSING = Gauge(
    "fieldwatch_ingest_sequences_missing",
    "Gateway sequences currently missing (batches not seen yet), as of the newest commit in this process",
    ["gateway"],
)
HELD = Counter(
    "fieldwatch_ingest_held_points",
    "Points of devices nobody registered held until the device is accepted (docs/ingest.md)",
    ["worker"],
)
HELD_PENDING = Gauge(
    "fieldwatch_ingest_held_points_pending",
    "Points held by the gateway's discovered devices awaiting a decision, as of this process's newest hold for it",
    ["gateway"],
)
HOLD_FILL = Gauge(
    "fieldwatch_ingest_hold_fill_ratio",
    "Fullest hold among the gateway's discovered devices (held / discovery_hold_max_points; 1 = refusing points)",
    ["gateway"],
)
QUEUE_DEPTH = Gauge("fieldwatch_ingest_queue_depth", "Messages received and not yet committed", ["worker"])
COMMIT_SECONDS = Histogram(
    "fieldwatch_ingest_commit_seconds",
    "Time to write and commit one batch of messages",
    ["worker"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BATCH_POINTS = Histogram(
    "fieldwatch_ingest_batch_points",
    "Points per committed batch (several MQTT messages are written in one transaction)",
    ["worker"],
    buckets=(10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
)


class WorkerMetrics:
    """The metrics above bound to one worker's label, so call sites stay short."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.points = POINTS.labels(worker)
        self.duplicates = DUPLICATES.labels(worker)
        self.conflicts = CONFLICTS.labels(worker)
        self.commits = COMMITS.labels(worker)
        self.db_errors = DB_ERRORS.labels(worker)
        self.seq_gaps = SEQ_GAPS.labels(worker)
        self.seq_filled = SEQ_FILLED.labels(worker)
        self.queue_depth = QUEUE_DEPTH.labels(worker)
        self.held = HELD.labels(worker)
        self.commit_seconds = COMMIT_SECONDS.labels(worker)
        self.batch_points = BATCH_POINTS.labels(worker)

    def message(self, kind: str, n: int = 1) -> None:
        MESSAGES.labels(self.worker, kind).inc(n)

    def dead_letter(self, reason: str, n: int = 1) -> None:
        DEAD_LETTERS.labels(self.worker, reason).inc(n)


_missing_lock = threading.Lock()
_missing_stamps: dict[str, int] = {}


def set_sequences_missing(missing: dict[str, tuple[int, int]]) -> None:
    """Set ``fieldwatch_ingest_sequences_missing`` from a commit's ``(stamp, missing)`` per gateway.

    Two workers in one process may report the same gateway in the opposite order of their
    commits; the stamp (the gateway's skipped + filled totals, which only grow) keeps the
    newer value.
    """
    with _missing_lock:
        for gateway, (stamp, n) in missing.items():
            if stamp >= _missing_stamps.get(gateway, -1):
                _missing_stamps[gateway] = stamp
                SEQ_MISSING.labels(gateway).set(n)


def set_hold_fill(gateway: str, pending: int, fill: float) -> None:
    """Set the hold gauges of one gateway (points held by its pending devices, the fullest device's ratio)."""
    HELD_PENDING.labels(gateway).set(pending)
    HOLD_FILL.labels(gateway).set(fill)
