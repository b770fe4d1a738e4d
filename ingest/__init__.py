"""fieldwatch ingest: MQTT telemetry into PostgreSQL, exactly once in the database.

Start a worker::

    from ingest import IngestWorker

    with IngestWorker(db_url, mqtt_url, client_id="ingest-1", on_commit=[print]) as worker:
        ...  # runs until the block ends; worker.stats has the counters

The pure pieces (:func:`validate_batch`, :func:`ingest.sequences.advance`) and the writer are
importable for tests and tools; ``ingest.cli.app`` is the ``fieldwatch ingest`` command.

Ingest also owns the asset registry and reading telemetry back, one module each:
:mod:`ingest.assets` (create/read/update/delete clients, sites, gateways, devices, series),
:mod:`ingest.queries` (devices with site and client, latest values, raw points, gateway health),
:mod:`ingest.timeseries` (time buckets over the rollups, gaps, CSV export),
:mod:`ingest.provisioning` (a gateway's registration and MQTT credentials rows),
:mod:`ingest.discovery` (devices nobody registered: discovered, their data held until accepted) and
:mod:`ingest.deadletters` (list, show, replay and purge what was refused).
"""

from ingest.errors import BrokerUnavailable, DatabaseUnavailable, IngestError, NotMigrated
from ingest.hold import HoldLimits
from ingest.points import CommittedPoint
from ingest.schema import MigrationError, migrate, storage_of
from ingest.sequences import advance as advance_sequences
from ingest.validate import GatewayRef, Limits, RegistrySnapshot, Verdict, validate_batch
from ingest.worker import IngestStats, IngestWorker
from ingest.writer import TelemetryWriter

__all__ = [
    "BrokerUnavailable",
    "CommittedPoint",
    "DatabaseUnavailable",
    "GatewayRef",
    "HoldLimits",
    "IngestError",
    "IngestStats",
    "IngestWorker",
    "Limits",
    "MigrationError",
    "NotMigrated",
    "RegistrySnapshot",
    "TelemetryWriter",
    "Verdict",
    "advance_sequences",
    "migrate",
    "storage_of",
    "validate_batch",
]
