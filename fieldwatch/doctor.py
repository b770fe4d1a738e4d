"""``fieldwatch doctor``: is this installation ready to run? One table of OK / WARN / INFO / FAIL.

Checks, in order, each with what to fix when it fails: the settings load; the database answers
and exists; TimescaleDB (information only: plain PostgreSQL works too); the migrations are up to
date; the broker answers; the MQTT login of FIELDWATCH_MQTT_URL is accepted; this host's clock
agrees with the database server's (ingest refuses points stamped too far in the future, and SLA
times drift). Exit status 1 when any check fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import typer

Status = Literal["OK", "INFO", "WARN", "FAIL"]

#: Clock skew between this host and the database server beyond which doctor warns / fails.
SKEW_WARN_S = 2.0
SKEW_FAIL_S = 60.0


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, and what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def _database_checks(database_url: str) -> list[Check]:
    import psycopg

    from fwcore.db import (
        DatabaseMissing,
        database_name,
        server_clock,
        server_of,
        timescaledb_version,
        wait_for_db,
    )
    from ingest.schema import MigrationError, NotMigrated, migration_status

    where = f"{database_name(database_url)} on {server_of(database_url)}"
    try:
        wait_for_db(database_url, timeout=5)
    except DatabaseMissing:
        return [Check("database", "FAIL", f"{where}: no such database", "run `fieldwatch db create`")]
    except ConnectionError as exc:
        return [Check("database", "FAIL", str(exc).split(" — ")[0], "start PostgreSQL or fix FIELDWATCH_DATABASE_URL")]
    checks = [Check("database", "OK", f"{where} answers")]

    version, offered = timescaledb_version(database_url)
    if version:
        checks.append(Check("timescaledb", "INFO", f"TimescaleDB {version} installed: hypertables and compression"))
    elif offered:
        checks.append(Check("timescaledb", "INFO", "offered by the server, not installed here yet (db migrate does)"))
    else:
        checks.append(
            Check(
                "timescaledb",
                "INFO",
                "not available: telemetry uses plain partitioned tables",
                "optional: install TimescaleDB before the first `db migrate` (docs/install.md)",
            )
        )

    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            states = migration_status(conn)
    except NotMigrated:
        checks.append(Check("migrations", "FAIL", "database not migrated", "run `fieldwatch db migrate`"))
    except MigrationError as exc:
        checks.append(Check("migrations", "FAIL", str(exc).splitlines()[0], "see docs/upgrading.md"))
    else:
        pending = [s.name for s in states if s.status in ("pending", "to repair")]
        problems = [s.name for s in states if s.problem]
        if problems:
            checks.append(
                Check("migrations", "FAIL", f"changed after release: {', '.join(problems)}", "see docs/upgrading.md")
            )
        elif pending:
            checks.append(
                Check("migrations", "FAIL", f"{len(pending)} pending ({pending[0]} …)", "run `fieldwatch db migrate`")
            )
        else:
            checks.append(Check("migrations", "OK", f"{len(states)} applied, up to date"))

    checks.append(clock_check(*server_clock(database_url)))
    return checks


def clock_check(skew: float, rtt: float) -> Check:
    """The clock row for a measured skew (database server − this host) and round trip, in seconds."""
    detail = f"database server is {skew:+.1f} s from this host (round trip {rtt * 1000:.0f} ms)"
    fix = "synchronise both clocks with NTP (`timedatectl set-ntp true`)"
    if abs(skew) >= SKEW_FAIL_S:
        return Check("clock", "FAIL", detail, fix)
    if abs(skew) >= SKEW_WARN_S:
        return Check("clock", "WARN", detail, fix)
    return Check("clock", "OK", detail)


def _broker_checks(mqtt_url: str, protocol: str, tls_files: object, timeout: float = 5.0) -> list[Check]:
    import socket

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fwcore.settings import mqtt_parts
    from fwcore.tls import TlsFiles, mqtt_tls_context

    parts = mqtt_parts(mqtt_url)
    where = f"{parts['host']}:{parts['port']}"
    try:
        with socket.create_connection((parts["host"], parts["port"]), timeout=timeout):
            pass
    except OSError as exc:
        return [
            Check(
                "broker",
                "FAIL",
                f"{where}: {exc.strerror or exc}",
                "start Mosquitto (`systemctl start mosquitto`) or fix FIELDWATCH_MQTT_URL",
            )
        ]
    checks = [Check("broker", "OK", f"{where} accepts connections")]

    done = threading.Event()
    result: dict[str, object] = {}

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        result["reason"] = reason
        done.set()

    v5 = protocol == "5"
    if v5:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, clean_session=True)
    if parts["username"]:
        client.username_pw_set(parts["username"], parts["password"])
    context = mqtt_tls_context(mqtt_url, tls_files if isinstance(tls_files, TlsFiles) else None)
    if context is not None:
        client.tls_set_context(context)
    client.on_connect = on_connect
    login = f"as {parts['username']!r}" if parts["username"] else "anonymously"
    try:
        client.connect(parts["host"], parts["port"], keepalive=10)
        client.loop_start()
        answered = done.wait(timeout)
    except (OSError, ValueError) as exc:
        checks.append(Check("mqtt login", "FAIL", f"{login}: {exc}", "check FIELDWATCH_MQTT_URL and the TLS settings"))
        return checks
    finally:
        client.loop_stop()
        client.disconnect()
    reason = result.get("reason")
    if not answered:
        checks.append(Check("mqtt login", "FAIL", f"{login}: no answer in {timeout:.0f} s", "check the broker's log"))
    elif getattr(reason, "is_failure", False):
        checks.append(
            Check(
                "mqtt login",
                "FAIL",
                f"{login}: refused ({reason})",
                "fix the user:password in FIELDWATCH_MQTT_URL, or add the login to the broker (docs/install.md)",
            )
        )
    else:
        checks.append(Check("mqtt login", "OK", f"{login}, MQTT {protocol}"))
    return checks


def run_checks(settings_loader: Callable[[], object] | None = None) -> list[Check]:
    """Every check, in order ."""
    from fwcore.settings import Settings, SettingsError, load_settings

    try:
        settings = (settings_loader or load_settings)()
    except SettingsError as exc:
        return [Check("settings", "FAIL", " ".join(str(exc).split()), "fix the variable named (docs/configuration.md)")]
    assert isinstance(settings, Settings)
    checks = [Check("settings", "OK", f"deployment {settings.deployment_name!r}")]
    checks += _database_checks(settings.database_url)
    checks += _broker_checks(settings.mqtt_url, settings.mqtt_protocol, settings.mqtt_tls)
    return checks


STYLES = {"OK": "green", "INFO": "cyan", "WARN": "yellow", "FAIL": "red"}


def doctor_command() -> None:
    """Check this installation: database, TimescaleDB, migrations, broker, MQTT login, clock skew.

    Prints a table of OK / INFO / WARN / FAIL with what to fix; exits 1 if any check fails.
    """
    from rich.console import Console
    from rich.table import Table

    try:
        checks = run_checks()
    except ImportError as exc:
        from fieldwatch.clierrors import fail, missing_extra_line

        raise fail(missing_extra_line("server", exc.name), 2) from None
    table = Table("check", "status", "detail", "what to do", title="fieldwatch doctor")
    for c in checks:
        table.add_row(c.name, f"[{STYLES[c.status]}]{c.status}[/]", c.detail, c.fix)
    Console(width=200).print(table)
    failed = [c.name for c in checks if c.status == "FAIL"]
    if failed:
        Console(stderr=True).print(f"[red]{len(failed)} check(s) failed: {', '.join(failed)}[/]")
        raise typer.Exit(1)


def mount(root: typer.Typer) -> None:
    """Add ``fieldwatch doctor``."""
    root.command("doctor")(doctor_command)
