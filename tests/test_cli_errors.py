"""Known failures of the `fieldwatch` command print one line saying what to do next; `--debug`
shows the traceback instead. `db create` makes the database a newcomer names, or says who can."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fwcore.db import drop_database, with_database
from tests.support.ports import free_port

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))


def run(*args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FIELDWATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "80", **env},
    )


def error_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.strip()]


def test_migrate_of_a_missing_database_says_to_create_it(admin_db_url: str, uid: str) -> None:
    """`db migrate` on a server without the named database says so and names `fieldwatch db create`, in one line."""
    res = run("db", "migrate", FIELDWATCH_DATABASE_URL=with_database(admin_db_url, f"fwmissing_{uid}"))
    assert res.returncode == 1
    assert error_lines(res) == [error_lines(res)[0]]
    assert f"database 'fwmissing_{uid}' does not exist" in res.stderr and "fieldwatch db create" in res.stderr


def test_db_create_then_migrate(admin_db_url: str, uid: str) -> None:
    """`db create` creates the database the URL names (once; again is a no-op), and `db migrate` then works."""
    name = f"fwcreate_{uid}"
    url = with_database(admin_db_url, name)
    try:
        first = run("db", "create", FIELDWATCH_DATABASE_URL=url)
        assert first.returncode == 0, first.stderr
        assert f"created database {name}" in first.stderr
        again = run("db", "create", FIELDWATCH_DATABASE_URL=url)
        assert again.returncode == 0 and "already exists" in again.stderr
        migrated = run("db", "migrate", FIELDWATCH_DATABASE_URL=url)
        assert migrated.returncode == 0, migrated.stderr
    finally:
        drop_database(admin_db_url, name)


@pytest.fixture
def role_without_createdb(admin_db_url: str, uid: str) -> Iterator[str]:
    """A login role that may not create databases (trust auth on loopback: no password)."""
    role = f"fwnocreate_{uid}"
    with psycopg.connect(admin_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB").format(sql.Identifier(role)))
    yield role
    with psycopg.connect(admin_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_db_create_without_the_right_gives_the_createdb_command(admin_db_url: str, role_without_createdb: str) -> None:
    """A user who may not create databases gets one line with the `createdb` command an administrator runs."""
    host = admin_db_url.split("@", 1)[1]
    url = f"postgresql://{role_without_createdb}@{host.rsplit('/', 1)[0]}/fwdenied_{role_without_createdb[-8:]}"
    res = run("db", "create", FIELDWATCH_DATABASE_URL=url)
    assert res.returncode == 1
    assert len(error_lines(res)) == 1, res.stderr
    assert f"createdb --owner {role_without_createdb} fwdenied_" in res.stderr and "Traceback" not in res.stderr


def test_unreachable_database_is_one_line_and_debug_shows_the_traceback() -> None:
    """A database that does not answer gives one line of advice; with --debug, the traceback."""
    url = "postgresql://postgres@127.0.0.1:1/postgres"
    res = run("db", "migrate", FIELDWATCH_DATABASE_URL=url)
    assert res.returncode == 1
    assert len(error_lines(res)) == 1 and "not reachable" in res.stderr and "FIELDWATCH_DATABASE_URL" in res.stderr
    debug = run("--debug", "db", "migrate", FIELDWATCH_DATABASE_URL=url)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "wait_for_db" in debug.stderr


def test_bad_setting_is_one_line(admin_db_url: str) -> None:
    """A malformed setting stops the command with one line naming the variable and the accepted form."""
    res = run("db", "migrate", FIELDWATCH_DATABASE_URL=admin_db_url, FIELDWATCH_API_PORT="eighty")
    assert res.returncode == 2
    assert len(error_lines(res)) == 1 and "FIELDWATCH_API_PORT" in res.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line(db_url: str, mqtt_url: str, uid: str) -> None:
    """`serve --port` on a busy port exits 1 with one line naming the address and --port, no traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run(
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            FIELDWATCH_DATABASE_URL=db_url,
            FIELDWATCH_MQTT_URL=mqtt_url,
            FIELDWATCH_DEPLOYMENT_NAME=f"t-{uid}",
        )
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    (line,) = error_lines(res)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line and "--port" in line


def test_serve_with_an_unreachable_broker_says_so_in_one_line(db_url: str, uid: str) -> None:
    """`serve` whose broker does not answer exits 1 with one line saying to start Mosquitto or fix the URL."""
    res = run(
        "serve",
        "--port",
        str(free_port()),
        FIELDWATCH_DATABASE_URL=db_url,
        FIELDWATCH_MQTT_URL="mqtt://127.0.0.1:1",
        FIELDWATCH_DEPLOYMENT_NAME=f"t-{uid}",
        FIELDWATCH_LOG_LEVEL="ERROR",
    )
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    last = error_lines(res)[-1]
    assert "127.0.0.1:1 is not reachable" in last and "FIELDWATCH_MQTT_URL" in last


@pytest.mark.parametrize(
    ("exc", "words", "code"),
    [
        (ModuleNotFoundError("No module named 'psycopg'", name="psycopg"), "pip install 'fieldwatch[server]'", 2),
        (ModuleNotFoundError("No module named 'amqtt'", name="amqtt"), "pip install 'fieldwatch[demo]'", 2),
        (OSError(98, "Address already in use"), "--port", 1),
        (ConnectionError("MQTT broker at h:1 is not reachable — start Mosquitto"), "start Mosquitto", 1),
    ],
)
def test_known_failures_are_described_in_one_line(exc: BaseException, words: str, code: int) -> None:
    """A missing extra, a busy port and an unreachable service each become one line with the next step."""
    from fieldwatch.clierrors import describe

    described = describe(exc)
    assert described is not None
    line, got = described
    assert words in line and "\n" not in line and got == code


def test_an_unknown_error_keeps_its_traceback() -> None:
    """An error the CLI does not know (a bug) is not turned into a one-line message."""
    from fieldwatch.clierrors import describe

    assert describe(KeyError("surprise")) is None
    assert describe(ModuleNotFoundError("No module named 'fieldwatch_typo'", name="fieldwatch_typo")) is None
