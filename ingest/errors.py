"""Ingest's own exceptions; psycopg and paho errors are translated into these at the boundary.

::

    IngestError
     ├── DatabaseUnavailable   the database refused or dropped the connection (retryable)
     ├── BrokerUnavailable     the MQTT broker could not be reached / refused us at start
     └── NotMigrated           the database has no fieldwatch schema yet
"""

from __future__ import annotations


class IngestError(RuntimeError):
    """Base of every error ingest raises on purpose."""


class DatabaseUnavailable(IngestError):
    """The database cannot be used right now; the same work may succeed later."""


class BrokerUnavailable(IngestError):
    """The MQTT broker could not be reached or refused the connection."""


class NotMigrated(IngestError):
    """The database is missing the schema; run ``fieldwatch db migrate``."""
