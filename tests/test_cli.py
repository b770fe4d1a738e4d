"""The `fieldwatch` command against a real database: migrate, status, tokens; clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from fwcore.auth import verify_token
from fwcore.db import create_database, drop_database
from ticketing import create_technician

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))


def run(*args: str, db_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FIELDWATCH, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FIELDWATCH_DATABASE_URL": db_url, "COLUMNS": "200", **env},
    )


@pytest.fixture
def empty_db(admin_db_url: str, uid: str):
    url = create_database(admin_db_url, f"fwcli_{uid}")
    yield url
    drop_database(admin_db_url, f"fwcli_{uid}")


def test_migrate_then_status(empty_db: str) -> None:
    """`db migrate` applies the migrations once, says so, and `db status` lists them with the storage."""
    first = run("db", "migrate", db_url=empty_db)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stderr and "0001_core.sql" in first.stderr
    second = run("db", "migrate", db_url=empty_db)
    assert second.returncode == 0 and "up to date" in second.stderr
    status = run("db", "status", db_url=empty_db)
    assert status.returncode == 0
    assert "storage: plain" in status.stdout and "0002_telemetry.plain.sql" in status.stdout


def test_status_of_an_unmigrated_database_says_what_to_do(empty_db: str) -> None:
    """`db status` before any migration tells the user to run `db migrate`."""
    res = run("db", "status", db_url=empty_db)
    assert res.returncode == 1 and "fieldwatch db migrate" in res.stderr


def test_tokens_create_prints_a_working_token(db_url: str) -> None:
    """`tokens create --role dispatcher` prints a token that verifies with that role; only its hash is stored."""
    res = run("tokens", "create", "--role", "dispatcher", "--name", "night-shift", db_url=db_url)
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip().splitlines()[-1]
    with psycopg.connect(db_url, autocommit=True) as conn:
        info = verify_token(conn, token)
        assert info is not None and (info.role, info.name) == ("dispatcher", "night-shift")
        stored = conn.execute("SELECT token_hash::text FROM api_tokens").fetchone()[0]
        assert token not in stored
    listed = run("tokens", "list", db_url=db_url)
    assert "night-shift" in listed.stdout and token not in listed.stdout
    revoked = run("tokens", "revoke", str(info.id), db_url=db_url)
    assert revoked.returncode == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert verify_token(conn, token) is None


def test_tokens_create_binds_a_technician_token_to_its_technician(db_url: str) -> None:
    """`--role technician --technician ID` prints a token acting as them; without the id it exits 2 saying so."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        tech = create_technician(conn, name="Ana", email="ana@x", home_lat=48.1, home_lon=11.5).id
    missing = run("tokens", "create", "--role", "technician", "--name", "phone", db_url=db_url)
    assert missing.returncode == 2 and "--technician ID" in missing.stderr
    res = run("tokens", "create", "--role", "technician", "--technician", str(tech), "--name", "phone", db_url=db_url)
    assert res.returncode == 0, res.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        info = verify_token(conn, res.stdout.strip().splitlines()[-1])
    assert info is not None and (info.role, info.technician_id) == ("technician", tech)
    assert f"bound to technician {tech}" in res.stderr


def test_unknown_role_is_refused_with_the_accepted_ones(db_url: str) -> None:
    """An unknown role exits 2 and lists the roles that exist."""
    res = run("tokens", "create", "--role", "boss", db_url=db_url)
    assert res.returncode == 2
    assert "dispatcher" in res.stderr and "reliability_engineer" in res.stderr


def test_bad_setting_stops_the_command_with_its_name(db_url: str) -> None:
    """A malformed FIELDWATCH_ variable stops the command at start, naming it and the accepted form."""
    res = run("db", "migrate", db_url="mysql://nope/x")
    assert res.returncode == 2
    assert "FIELDWATCH_DATABASE_URL" in res.stderr and "postgresql://" in res.stderr


def test_unreachable_database_says_how_to_fix(admin_db_url: str) -> None:
    """A database that does not answer gives advice instead of a traceback."""
    res = run("db", "migrate", db_url="postgresql://postgres@127.0.0.1:1/postgres")
    assert res.returncode == 1
    assert "not reachable" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_serve_runs_every_service_and_stops_on_sigterm(db_url: str, mqtt_url: str, uid: str) -> None:
    """`fieldwatch serve` migrates, answers /readyz, and exits 0 on SIGTERM."""
    import signal

    import httpx

    from tests.support.ports import free_port
    from tests.support.waits import wait_until

    port = free_port()
    env = {
        **os.environ,
        "FIELDWATCH_DATABASE_URL": db_url,
        "FIELDWATCH_MQTT_URL": mqtt_url,
        "FIELDWATCH_API_PORT": str(port),
        "FIELDWATCH_INGEST_CLIENT_ID": f"serve-{uid}",
        "FIELDWATCH_INGEST_SHARE_GROUP": f"serve-{uid}",
    }
    proc = subprocess.Popen([FIELDWATCH, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def readyz() -> httpx.Response:
        assert proc.poll() is None, proc.stderr.read()  # it died: say why
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)

    try:
        ready = wait_until(
            readyz, 30, done=lambda r: r.status_code == 200, what="/readyz 200", ignore=(httpx.HTTPError,)
        )
        assert ready.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
