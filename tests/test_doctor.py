"""`fieldwatch doctor` says whether an installation is ready: a table of OK / INFO / WARN / FAIL rows,
each failure with what to fix, and a non-zero exit when anything fails."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldwatch.doctor import clock_check
from fieldwatch.mosquitto_auth import mosquitto_hash
from fwcore.db import create_database, drop_database, with_database
from tests.support.brokers import PrivateMosquitto

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))


def doctor(database_url: str, mqtt_url: str) -> tuple[int, dict[str, str], str]:
    """Run `fieldwatch doctor`; (exit code, check name → its whole table row, stderr)."""
    res = subprocess.run(
        [FIELDWATCH, "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FIELDWATCH_DATABASE_URL": database_url, "FIELDWATCH_MQTT_URL": mqtt_url},
    )
    rows = {}
    for line in res.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) >= 3 and cells[1] in ("OK", "INFO", "WARN", "FAIL"):
            rows[cells[0]] = " | ".join(cells[1:])
    return res.returncode, rows, res.stderr


@pytest.fixture
def login_broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A Mosquitto that admits only ingest:ingest-pw."""
    pw = tmp_path / "passwd"
    pw.write_text(f"ingest:{mosquitto_hash('ingest-pw')}\n")
    pw.chmod(0o600)
    with PrivateMosquitto(password_file=pw, workdir=tmp_path / "broker") as broker:
        yield broker


def test_doctor_passes_on_a_ready_installation(db_url: str, login_broker: PrivateMosquitto) -> None:
    """A migrated database and a broker that accepts the login: every check OK (TimescaleDB as INFO), exit 0."""
    code, rows, err = doctor(db_url, f"mqtt://ingest:ingest-pw@127.0.0.1:{login_broker.port}")
    assert code == 0, (rows, err)
    assert set(rows) == {"settings", "database", "timescaledb", "migrations", "clock", "broker", "mqtt login"}
    assert all(row.startswith(("OK", "INFO")) for row in rows.values()), rows
    assert "up to date" in rows["migrations"] and "'ingest'" in rows["mqtt login"]


def test_doctor_fails_on_an_unmigrated_database_and_a_refused_login(
    admin_db_url: str, uid: str, login_broker: PrivateMosquitto
) -> None:
    """An unmigrated database and a wrong MQTT password are FAIL rows saying what to do, and the exit is 1."""
    name = f"fwdoctor_{uid}"
    url = create_database(admin_db_url, name)
    try:
        code, rows, err = doctor(url, f"mqtt://ingest:wrong@127.0.0.1:{login_broker.port}")
    finally:
        drop_database(admin_db_url, name)
    assert code == 1
    assert rows["database"].startswith("OK") and rows["broker"].startswith("OK")
    assert rows["migrations"].startswith("FAIL") and "fieldwatch db migrate" in rows["migrations"]
    assert rows["mqtt login"].startswith("FAIL") and "refused" in rows["mqtt login"]
    assert "migrations" in err and "mqtt login" in err


def test_doctor_fails_on_a_missing_database_and_a_silent_broker(admin_db_url: str, uid: str) -> None:
    """A database that does not exist says to run `db create`; a broker that does not answer says to start it."""
    code, rows, _ = doctor(with_database(admin_db_url, f"fwnone_{uid}"), "mqtt://127.0.0.1:1")
    assert code == 1
    assert rows["database"].startswith("FAIL") and "fieldwatch db create" in rows["database"]
    assert rows["broker"].startswith("FAIL") and "Mosquitto" in rows["broker"]
    assert "mqtt login" not in rows and "migrations" not in rows


@pytest.mark.parametrize(
    ("skew", "status"), [(0.3, "OK"), (-1.9, "OK"), (2.5, "WARN"), (-30.0, "WARN"), (61.0, "FAIL"), (-3600.0, "FAIL")]
)
def test_clock_skew_grades(skew: float, status: str) -> None:
    """Clock skew under 2 s is OK, under a minute WARN (SLA times drift), beyond FAIL (points get refused)."""
    check = clock_check(skew, 0.004)
    assert check.status == status
    assert (check.fix != "") == (status != "OK")
