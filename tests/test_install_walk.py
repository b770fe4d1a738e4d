"""docs/install.md's newcomer path, as far as it runs here: `db create` on a new name, `db migrate`,
`doctor` all green against a broker with logins, and `gateway provision` of one gateway whose
written config logs in to the broker."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fieldwatch.mosquitto_auth import mosquitto_hash
from fwcore.db import drop_database, with_database
from fwcore.settings import mqtt_parts
from tests.support.brokers import PrivateMosquitto
from tests.support.waits import wait_until

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[PrivateMosquitto, Path, Path]]:
    """A broker as docs/install.md sets it up: no anonymous access, the server's ingest login by hand."""
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    pw.write_text(f"ingest:{mosquitto_hash('ingest-pw')}\n")
    acl.write_text("user ingest\ntopic readwrite fw/v1/#\n")
    pw.chmod(0o600)
    acl.chmod(0o600)
    with PrivateMosquitto(password_file=pw, acl_file=acl, workdir=tmp_path / "broker") as b:
        yield b, pw, acl


def test_install_md_walk(
    admin_db_url: str, uid: str, tmp_path: Path, broker: tuple[PrivateMosquitto, Path, Path]
) -> None:
    """A new database is created, migrated and passes doctor, and one provisioned gateway logs in to the broker."""
    mosquitto, pw, acl = broker
    name = f"fwinstall_{uid}"
    env = {
        **os.environ,
        "COLUMNS": "200",
        "FIELDWATCH_DATABASE_URL": with_database(admin_db_url, name),
        "FIELDWATCH_MQTT_URL": mosquitto.url_as("ingest", "ingest-pw"),
        "FIELDWATCH_DEPLOYMENT_NAME": f"walk-{uid}",
        "FIELDWATCH_BROKER_USER": getpass.getuser(),  # the private broker runs as whoever runs the tests
    }

    def fieldwatch(*args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([FIELDWATCH, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res

    try:
        assert "next: fieldwatch db migrate" in fieldwatch("db", "create").stderr
        fieldwatch("db", "migrate")
        report = fieldwatch("doctor").stdout
        assert "FAIL" not in report and "up to date" in report
        # The fleet CLI (docs/install.md) registers the client and site; here, the registry directly.
        with psycopg.connect(env["FIELDWATCH_DATABASE_URL"]) as conn:
            row = conn.execute(
                "INSERT INTO clients (name, segment) VALUES ('Acme', 'standard') RETURNING id"
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO sites (client_id, slug, name, latitude, longitude) "
                "VALUES (%s, 'plant-north', 'Plant North', 41.9, -87.7)",
                (row[0],),
            )
        out = tmp_path / "gw-01.yaml"
        fieldwatch(
            "gateway", "provision", "--site", "plant-north", "--name", "gw-01", "--out", str(out),
            "--password-file", str(pw), "--acl-file", str(acl), "--mqtt-url", mosquitto.url,
        )  # fmt: skip
        mosquitto.reload()
        parts = mqtt_parts(yaml.safe_load(out.read_text())["mqtt_url"])
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-01-{uid}")
        client.username_pw_set(parts["username"], parts["password"])
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        try:
            wait_until(client.is_connected, 5, what="the broker to accept the provisioned gateway")
        finally:
            client.loop_stop()
            client.disconnect()
    finally:
        drop_database(admin_db_url, name)


def test_install_md_names_every_step_and_shipped_file() -> None:
    """docs/install.md walks install → db create/migrate → doctor → provision → skills, technician → rule →
    ticket, and every deploy/ file it names exists."""
    text = (ROOT / "docs" / "install.md").read_text()
    for step in (
        "fieldwatch db create",
        "fieldwatch db migrate",
        "fieldwatch doctor",
        "fieldwatch gateway provision",
        "fieldwatch skills",
        "fieldwatch technicians",
        "fieldwatch rules apply",
        "pg_dump",
        "docker compose",
    ):
        assert step in text, step
    import re

    for path in set(re.findall(r"deploy/[\w./@-]+[\w@]", text)):
        assert (ROOT / path).exists(), path
