"""The migration runner against real PostgreSQL: clear refusals, accepted earlier versions, status per migration."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fwcore.db import create_database, drop_database
from fwcore.migrations import LOCK_FILE, MigrationDir, MigrationError, NotMigrated, write_lock
from ingest.schema import migrate, migration_status
from tests.fixtures.migrations.history import HERE as HISTORY_DIR
from tests.fixtures.migrations.history import sha256

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))
RULES_V3 = sha256((HISTORY_DIR / "9ac7ce4" / "0005_rules.sql").read_text(encoding="utf-8"))


@pytest.fixture
def empty_db(admin_db_url: str) -> Iterator[str]:
    name = f"fwmr_{uuid.uuid4().hex[:10]}"
    url = create_database(admin_db_url, name)
    yield url
    drop_database(admin_db_url, name)


def _set_checksum(url: str, version: str, checksum: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s", (checksum, version))


def _dir(tmp_path: Path, files: dict[str, str]) -> MigrationDir:
    for name, sql in files.items():
        (tmp_path / name).write_text(sql, encoding="utf-8")
    return MigrationDir(tmp_path, "tmp/migrations", 0x7E57)


def test_a_file_changed_after_it_was_applied_is_refused_naming_file_expected_found(
    empty_db: str, tmp_path: Path
) -> None:
    """Editing an applied file makes migrate refuse, naming the file, the recorded and the current checksums."""
    first = "CREATE TABLE a (id int);\n"
    mdir = _dir(tmp_path, {"0001_a.sql": first})
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert mdir.migrate(conn) == ["0001_a.sql"]
        edited = first + "ALTER TABLE a ADD COLUMN b int;\n"
        _dir(tmp_path, {"0001_a.sql": edited, "0002_b.sql": "CREATE TABLE b (id int);\n"})
        with pytest.raises(MigrationError) as err:
            mdir.migrate(conn)
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)  # refused before applying anything
    message = str(err.value)
    assert "migration 0001_a.sql changed after it was applied" in message
    assert f"expected sha256 {sha256(first)}" in message and f"found sha256 {sha256(edited)}" in message
    assert "Restore the file as released" in message and "write a new migration instead" in message
    assert "docs/upgrading.md" in message


def test_an_unknown_applied_checksum_is_refused(db_url: str) -> None:
    """A recorded checksum that is neither the file's nor a known earlier release is refused."""
    _set_checksum(db_url, "0005", "f" * 64)
    with pytest.raises(MigrationError) as err:
        migrate(db_url)
    message = str(err.value)
    assert "migration 0005_rules.sql changed after it was applied" in message
    assert f"expected sha256 {'f' * 64}" in message
    with psycopg.connect(db_url) as conn:
        [state] = [s for s in migration_status(conn) if s.version == "0005"]
    assert state.status == "changed" and state.found is not None and f"found sha256 {state.found}" in message


def test_a_known_earlier_version_is_accepted_and_its_repair_runs(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A database that applied 0005 v3 is accepted: the repair runs (logged at INFO) and later ones stay."""
    _set_checksum(db_url, "0005", RULES_V3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = '0005.1'")
        [state] = [s for s in migration_status(conn) if s.version == "0005"]
        assert (state.status, state.earlier and state.earlier.repair) == ("to repair", "0005.1_repair_rules.sql")
    with caplog.at_level(logging.INFO, logger="fwcore.migrations"):
        assert migrate(db_url) == ["0005.1_repair_rules.sql"]  # a no-op on this schema, recorded
    said = caplog.text
    assert "0005_rules.sql was applied as an earlier release (v3@9ac7ce4)" in said
    assert "0005.1_repair_rules.sql brings it to the current schema" in said
    with psycopg.connect(db_url) as conn:
        [state] = [s for s in migration_status(conn) if s.version == "0005"]
    assert state.status == "repaired" and state.describe() == "repaired by 0005.1_repair_rules.sql (applied v3@9ac7ce4)"
    assert migrate(db_url) == []


def test_a_file_that_differs_from_the_lock_is_refused_before_anything_runs(empty_db: str, tmp_path: Path) -> None:
    """A released file edited before its first migrate is refused too: the lock, not the database, says so."""
    mdir = _dir(tmp_path, {"0001_a.sql": "CREATE TABLE a (id int);\n"})
    write_lock(tmp_path)
    _dir(tmp_path, {"0001_a.sql": "CREATE TABLE a (id bigint);\n"})
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(MigrationError, match=f"0001_a.sql differs from the released file.*in {LOCK_FILE}"):
            mdir.migrate(conn)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


def test_an_earlier_version_without_its_repair_file_is_refused(empty_db: str, tmp_path: Path) -> None:
    """If the lock names a repair that is not shipped, migrate refuses rather than skip it."""
    v1, v2 = "CREATE TABLE a (id int);\n", "CREATE TABLE a (id int, b int);\n"
    mdir = _dir(tmp_path, {"0001_a.sql": v1})
    with psycopg.connect(empty_db, autocommit=True) as conn:
        mdir.migrate(conn)
        _dir(tmp_path, {"0001_a.sql": v2})
        (tmp_path / LOCK_FILE).write_text(
            f"0001_a.sql {sha256(v2)}\n0001_a.sql {sha256(v1)} earlier=v1@abc repair=0001.1_repair_a.sql\n",
            encoding="utf-8",
        )
        with pytest.raises(MigrationError, match=r"applied as v1@abc, whose repair 0001.1_repair_a.sql is not"):
            mdir.migrate(conn)
        _dir(tmp_path, {"0001.1_repair_a.sql": "ALTER TABLE a ADD COLUMN IF NOT EXISTS b int;\n"})
        assert mdir.migrate(conn) == ["0001.1_repair_a.sql"]
        assert conn.execute("SELECT b FROM a").fetchall() == []


def test_a_failing_migration_is_a_migration_error_and_is_not_recorded(empty_db: str, tmp_path: Path) -> None:
    """A migration whose SQL fails rolls back, is not recorded, and raises MigrationError naming it."""
    mdir = _dir(
        tmp_path, {"0001_a.sql": "CREATE TABLE a (id int);\n", "0002_b.sql": "CREATE TABLE b (id nosuchtype);\n"}
    )
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(MigrationError, match=r"migration 0002_b\.sql failed: .*nosuchtype"):
            mdir.migrate(conn)
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [("0001",)]


def test_status_lists_every_migration_with_its_state(db_url: str, empty_db: str) -> None:
    """migration_status: all ok at head; then repaired, changed and no-file rows as the database says."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert {s.status for s in migration_status(conn)} == {"ok"}
        conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ('0099', '0099_future.sql', 'x')")
    _set_checksum(db_url, "0005", RULES_V3)
    _set_checksum(db_url, "0007", "0" * 64)
    with psycopg.connect(db_url) as conn:
        states = {s.version: s for s in migration_status(conn)}
    assert states["0005"].status == "repaired"
    assert states["0007"].status == "changed" and states["0007"].describe().startswith("changed: expected 000000000000")
    assert states["0099"].status == "no file"
    assert states["0001"].status == "ok"
    with psycopg.connect(empty_db) as conn, pytest.raises(NotMigrated):
        migration_status(conn)


def _cli(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FIELDWATCH_DATABASE_URL": db_url, "COLUMNS": "200"}
    return subprocess.run([FIELDWATCH, *args], capture_output=True, text=True, timeout=60, env=env)


def test_db_status_shows_repaired_and_changed_migrations(db_url: str) -> None:
    """`fieldwatch db status` shows a repaired migration, and a changed one with exit 1 and what to do."""
    _set_checksum(db_url, "0005", RULES_V3)
    ok = _cli("db", "status", db_url=db_url)
    assert ok.returncode == 0, ok.stderr
    assert "repaired by 0005.1_repair_rules.sql (applied v3@9ac7ce4)" in ok.stdout
    _set_checksum(db_url, "0006", "0" * 64)
    bad = _cli("db", "status", db_url=db_url)
    assert bad.returncode == 1
    assert "changed: expected 000000000000" in bad.stdout
    assert "migration 0006_ticketing.sql changed after it was applied" in bad.stderr.replace("\n", " ")
