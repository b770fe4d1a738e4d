"""The ingest schema: its migrations directory, telemetry storage detection, and ``migrate``.

Migrations are files ``NNNN_name.sql`` in ``ingest/migrations``. A migration may
come in two variants, ``NNNN_name.timescale.sql`` and ``NNNN_name.plain.sql``;
which one runs depends on whether the TimescaleDB extension can be used on the
server, decided once (at the first migration) and stored in ``fw_meta``.

The runner is the foundation's (:mod:`fwcore.migrations`): one transaction per migration,
recorded in ``schema_migrations`` with its checksum, under a session advisory lock so two
processes starting at once apply each migration exactly once; a file that changed after it
was applied is refused, and ``ingest/migrations/checksums.lock`` records every released file
and the earlier versions of edited ones that the ``NNNN.1_repair_*`` migrations bring to the
current schema (docs/upgrading.md).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Literal

import psycopg

from fwcore.migrations import Migration, MigrationDir, MigrationError, MigrationState, NotMigrated

__all__ = [
    "MIGRATIONS",
    "MIGRATION_LOCK_KEY",
    "Migration",
    "MigrationError",
    "MigrationState",
    "NotMigrated",
    "Storage",
    "available_migrations",
    "detect_storage",
    "migrate",
    "migration_status",
    "storage_of",
    "timescale_license",
]

log = logging.getLogger(__name__)

#: Arbitrary but fixed advisory lock key ("fieldwatch migrations").
MIGRATION_LOCK_KEY = 0x6677_6D69
Storage = Literal["timescale", "plain"]

#: The ingest migrations, bound to the foundation's runner.
MIGRATIONS = MigrationDir(resources.files("ingest") / "migrations", "ingest/migrations", MIGRATION_LOCK_KEY)


def available_migrations(storage: Storage) -> list[Migration]:
    """The migrations for ``storage``, in order, picking the right variant of each."""
    return MIGRATIONS.available(storage)


def detect_storage(conn: psycopg.Connection) -> Storage:
    """``timescale`` if the TimescaleDB extension is (or can be) installed here, else ``plain``."""
    row = conn.execute("SELECT value FROM fw_meta WHERE key = 'storage'").fetchone()
    if row:
        return row[0]
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return "timescale"
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
        return "plain"
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        # Typical cause: the library is installed but not in shared_preload_libraries.
        log.warning("TimescaleDB is installed but cannot be enabled (%s); using plain partitions", exc)
        return "plain"
    return "timescale"


def timescale_license(conn: psycopg.Connection) -> str | None:
    """``timescale`` (community: compression, policies), ``apache`` (no policies) or None."""
    try:
        row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    except psycopg.Error:
        return None
    return row[0] if row and row[0] else None


def migrate(url_or_conn: str | psycopg.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    if isinstance(url_or_conn, str):
        with psycopg.connect(url_or_conn, autocommit=True) as conn:
            return MIGRATIONS.migrate(conn, _prepare_storage)
    url_or_conn.autocommit = True
    return MIGRATIONS.migrate(url_or_conn, _prepare_storage)


def _prepare_storage(conn: psycopg.Connection) -> Storage:
    """The variant to run (under the migration lock): the stored storage, else the detected one."""
    conn.execute("CREATE TABLE IF NOT EXISTS fw_meta (key text PRIMARY KEY, value text NOT NULL)")
    return detect_storage(conn)


def migration_status(conn: psycopg.Connection) -> list[MigrationState]:
    """Each migration: ok, repaired (by which file), to repair, changed (refused), pending or no file.

    Raises NotMigrated on a database that was never migrated. Changes nothing.
    """
    return MIGRATIONS.states(conn, storage_of)


def storage_of(conn: psycopg.Connection) -> Storage:
    """Which telemetry storage a migrated database uses."""
    row = conn.execute("SELECT value FROM fw_meta WHERE key = 'storage'").fetchone()
    if not row:
        raise MigrationError("database is not migrated; run `fieldwatch db migrate`")
    return row[0]
