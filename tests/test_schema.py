"""Migrations: ordered, recorded, idempotent, safe under concurrency, storage detected."""

from __future__ import annotations

import threading

import psycopg
import pytest

from fwcore.db import create_database, drop_database
from ingest.schema import MigrationError, available_migrations, migrate, storage_of


@pytest.fixture
def empty_db(admin_db_url: str, uid: str):
    url = create_database(admin_db_url, f"fwe_{uid}")
    yield url
    drop_database(admin_db_url, f"fwe_{uid}")


def test_migrate_applies_all_then_nothing(empty_db: str) -> None:
    """The first run applies every migration in order; the second applies none."""
    first = migrate(empty_db)
    with psycopg.connect(empty_db) as conn:
        assert first == [m.name for m in available_migrations(storage_of(conn))]
    assert migrate(empty_db) == []
    with psycopg.connect(empty_db) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(versions) and len(versions) == len(first)


def test_concurrent_migrations_apply_each_once(empty_db: str) -> None:
    """Four processes migrating at once apply each migration exactly once, with no error."""
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_db))
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    applied = [name for r in results for name in r]
    with psycopg.connect(empty_db) as conn:
        assert sorted(applied) == sorted(m.name for m in available_migrations(storage_of(conn)))


@pytest.mark.plain_storage
def test_plain_storage_is_partitioned_by_time(db_url: str) -> None:
    """Without TimescaleDB, telemetry is a range-partitioned table and partitions are made on demand."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert storage_of(conn) == "plain"
        strategy = conn.execute(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'telemetry'::regclass"
        ).fetchone()
        assert strategy == ("r",)
        assert conn.execute("SELECT fw_ensure_telemetry_partition('2026-01-02')").fetchone() == ("telemetry_p20260102",)
        conn.execute("SELECT fw_ensure_telemetry_partition('2026-01-02')")  # idempotent
        conn.execute(
            "INSERT INTO telemetry VALUES (1, '2026-01-02 12:00+00', 1.5, 0), (1, '2026-01-02 23:59:59+00', 2, 0)"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO telemetry VALUES (1, '2026-01-05 00:00+00', 1, 0)")
        assert conn.execute("SELECT fw_drop_telemetry_before('2026-01-03')").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (0,)


def test_edited_migration_is_refused(db_url: str) -> None:
    """Changing an applied migration is an error that says to write a new one."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = '0001'")
    with pytest.raises(MigrationError, match="write a new migration"):
        migrate(db_url)
