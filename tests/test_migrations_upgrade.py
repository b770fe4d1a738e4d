"""Upgrades: every database a user may have built from main's history migrates to exactly today's schema.

A state is the migration files of one commit of main that changed ``ingest/migrations``, applied
the way that commit's runner applied them (fixtures/migrations/history.py). Each test builds that
database, fills it with data, runs today's ``migrate`` and checks the data is intact, the schema
equals a freshly migrated database (compared as sets, not by column order) and a second migrate
applies nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from fwcore.db import create_database, drop_database
from ingest.schema import migrate
from tests.fixtures.migrations.history import (
    COMMITS,
    HISTORY,
    apply_as_released,
    assert_backfills,
    assert_rows_intact,
    catalog,
    catalog_diff,
    files_at,
    rows,
    seed,
    tables,
)

#: Databases a user may have: each commit's state built from empty, and the two states a user reached
#: by migrating at an earlier commit when a later one only added a file that sorts before the others.
PATHS: dict[str, list[str]] = {
    f"{c}-{re.sub(r'[^0-9a-z]+', '-', what.split(':')[0]).strip('-')}": [c] for c, what, _ in HISTORY
}
PATHS["eb6fa32-0004v1-after-0005v1"] = ["bdd2d3a", "eb6fa32"]
PATHS["1f77c23-0003-after-0006v4"] = ["6ef749f", "1f77c23"]
FIRST = next(iter(PATHS))


@pytest.fixture
def fresh(admin_db_url: str) -> Iterator[str]:
    name = f"fwup_{uuid.uuid4().hex[:10]}"
    url = create_database(admin_db_url, name)
    yield url
    drop_database(admin_db_url, name)


@pytest.fixture(scope="module")
def head(admin_db_url: str) -> dict[str, set[tuple]]:
    """The catalog of an empty database migrated to head."""
    name = f"fwhead_{uuid.uuid4().hex[:10]}"
    url = create_database(admin_db_url, name)
    try:
        migrate(url)
        with psycopg.connect(url) as conn:
            return catalog(conn)
    finally:
        drop_database(admin_db_url, name)


def upgrade_and_check(url: str, path: list[str], head: dict[str, set[tuple]]) -> None:
    """Build the state of ``path``, seed it, migrate to head; data intact, schema = head, nothing left."""
    with psycopg.connect(url, autocommit=True) as conn:
        for commit in path:
            apply_as_released(conn, files_at(commit))
        before_tables = tables(conn)
        seeded = seed(conn)
        before = rows(conn)
    assert {"clients", "devices", "telemetry", "rules", "alarms", "tickets", "technicians"} <= set(seeded)

    migrate(url)

    with psycopg.connect(url, autocommit=True) as conn:
        assert_rows_intact(before, rows(conn))
        assert catalog_diff(catalog(conn), head) == {}
        assert migrate(url) == []
        assert_backfills(conn, before_tables)
        _check_usable(conn)


def _check_usable(conn: psycopg.Connection) -> None:
    """The upgraded database works as head: rollups cover the old telemetry, tickets feed history and webhooks."""
    assert conn.execute("SELECT fw_refresh_rollups()").fetchone()[0] > 0
    assert (
        conn.execute("SELECT sum(n) FROM telemetry_1h").fetchone()
        == conn.execute("SELECT count(*) FROM telemetry").fetchone()
    )
    conn.execute(
        "INSERT INTO webhook_endpoints (url, secret) VALUES ('https://erp.example/in', 'another-16-char-secret')"
    )
    ticket = conn.execute(
        "INSERT INTO tickets (device_id, problem_code, title) VALUES (2, 'NEW', 'after upgrade') RETURNING id"
    ).fetchone()[0]
    assert conn.execute("SELECT status FROM ticket_status_history WHERE ticket_id = %s", (ticket,)).fetchall() == [
        ("new",)
    ]
    sent = conn.execute("SELECT count(*) FROM webhook_deliveries WHERE payload->>'ticket_id' = %s", (str(ticket),))
    assert sent.fetchone()[0] >= 1


def test_first_landed_state_with_data_upgrades_to_head(fresh: str, head: dict[str, set[tuple]]) -> None:
    """A database built by the first landed migrations (0001, 0002), with data, upgrades to head intact."""
    assert PATHS[FIRST] == ["629a48a"]
    upgrade_and_check(fresh, PATHS[FIRST], head)


@pytest.mark.parametrize("path", [p for k, p in PATHS.items() if k != FIRST], ids=[k for k in PATHS if k != FIRST])
def test_every_past_state_with_data_upgrades_to_head(fresh: str, head: dict[str, set[tuple]], path: list[str]) -> None:
    """A database built by any past state of the migrations, with data, upgrades to head intact."""
    upgrade_and_check(fresh, path, head)


def _unreleased() -> dict[str, str]:
    """Migrations newer than the last historical state of main (name → text): written, not landed yet."""
    from ingest.schema import MIGRATIONS

    released = files_at(COMMITS[-1])
    return {m.name: m.sql for m in MIGRATIONS.files() if "_repair_" not in m.name and m.name not in released}


def test_history_covers_every_state() -> None:
    """The last historical state is today's migrations, so the upgrade tests reach head; a migration written since
    is numbered after all of them (when it lands, its commit joins HISTORY)."""
    from ingest.schema import MIGRATIONS

    today = {m.name: m.sql for m in MIGRATIONS.files() if "_repair_" not in m.name}
    released = files_at(COMMITS[-1])
    assert {name: today.get(name) for name in released} == released
    assert all(name > max(released) for name in _unreleased())


def test_repairs_are_no_ops_on_a_database_at_head(fresh: str) -> None:
    """On a database that applied today's released migrations (and any written since), the three repairs apply
    and change nothing."""
    repairs = ["0004.1_repair_ingest_storage.sql", "0005.1_repair_rules.sql", "0006.1_repair_ticketing.sql"]
    with psycopg.connect(fresh, autocommit=True) as conn:
        apply_as_released(conn, files_at(COMMITS[-1]) | _unreleased())
        seed(conn)
        before, schema = rows(conn), catalog(conn)
    assert migrate(fresh) == repairs
    with psycopg.connect(fresh) as conn:
        after, schema_after = rows(conn), catalog(conn)
    del before["schema_migrations"], after["schema_migrations"]
    assert after == before
    recorded = sorted(str((name.partition("_")[0], name)) for name in repairs)
    assert catalog_diff(schema_after, schema) == {"migrations": {"extra": recorded, "missing": []}}
