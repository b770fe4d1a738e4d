"""Ordered SQL migrations, applied once each, safe when several processes start together.

Migrations are files ``NNNN_name.sql`` in ``ingest/migrations``. A migration may
come in two variants, ``NNNN_name.timescale.sql`` and ``NNNN_name.plain.sql``;
which one runs depends on whether the TimescaleDB extension can be used on the
server, decided once (at the first migration) and stored in ``fw_meta``.

Every migration runs in its own transaction and is recorded in
``schema_migrations`` with a checksum, under a session advisory lock so two
processes starting at once apply each migration exactly once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import psycopg

log = logging.getLogger(__name__)

#: Arbitrary but fixed advisory lock key ("fieldwatch migrations").
MIGRATION_LOCK_KEY = 0x6677_6D69
Storage = Literal["timescale", "plain"]


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """A migration could not be applied, or the applied history does not match the files."""


def available_migrations(storage: Storage) -> list[Migration]:
    """The migrations for ``storage``, in order, picking the right variant of each."""
    files = resources.files("ingest") / "migrations"
    chosen: dict[str, Migration] = {}
    for entry in sorted(files.iterdir(), key=lambda e: e.name):
        name = entry.name
        if not name.endswith(".sql"):
            continue
        stem = name[:-4]
        variant = None
        for v in ("timescale", "plain"):
            if stem.endswith("." + v):
                variant, stem = v, stem[: -len(v) - 1]
        if variant is not None and variant != storage:
            continue
        version = stem.partition("_")[0]
        if version in chosen:
            raise MigrationError(f"two migrations share version {version}: {chosen[version].name} and {name}")
        chosen[version] = Migration(version=version, name=name, sql=entry.read_text())
    return [chosen[v] for v in sorted(chosen)]


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
            return _migrate(conn)
    url_or_conn.autocommit = True
    return _migrate(url_or_conn)


def _migrate(conn: psycopg.Connection) -> list[str]:
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        conn.execute("CREATE TABLE IF NOT EXISTS fw_meta (key text PRIMARY KEY, value text NOT NULL)")
        storage = detect_storage(conn)
        applied = {v: (n, c) for v, n, c in conn.execute("SELECT version, name, checksum FROM schema_migrations")}
        done: list[str] = []
        for m in available_migrations(storage):
            if m.version in applied:
                name, checksum = applied[m.version]
                if checksum != m.checksum:
                    raise MigrationError(
                        f"migration {m.name} changed after it was applied as {name}; "
                        "write a new migration instead of editing an applied one"
                    )
                continue
            try:
                with conn.transaction():
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
            except psycopg.Error as exc:
                raise MigrationError(f"migration {m.name} failed: {exc}") from exc
            log.info("applied migration %s", m.name)
            done.append(m.name)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def storage_of(conn: psycopg.Connection) -> Storage:
    """Which telemetry storage a migrated database uses."""
    row = conn.execute("SELECT value FROM fw_meta WHERE key = 'storage'").fetchone()
    if not row:
        raise MigrationError("database is not migrated; run `fieldwatch db migrate`")
    return row[0]
