"""Gateway provisioning: DB registration, Mosquitto password/ACL entries, config file — against a real broker."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from fieldwatch.cli import app
from fieldwatch.provision import (
    ProvisionError,
    mosquitto_hash,
    provision,
    verify_mosquitto_hash,
    with_acl_entry,
    with_password_entry,
)
from fwcore.settings import mqtt_parts
from gateway import load_config
from tests.support.brokers import PrivateMosquitto
from tests.support.waits import wait_until


def _site(db_url: str, slug: str) -> None:
    with psycopg.connect(db_url) as conn:
        client = conn.execute(
            "INSERT INTO clients (name, segment) VALUES (%s, 'standard') RETURNING id", (f"c-{slug}",)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, %s, %s, 0, 0)",
            (client, slug, slug),
        )


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our $7$ hash verifies a password the way mosquitto_passwd's does, and rejects a wrong one."""
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "u", "s3cret"], check=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert verify_mosquitto_hash("s3cret", theirs)
    assert not verify_mosquitto_hash("wrong", theirs)
    assert verify_mosquitto_hash("x", mosquitto_hash("x")) and mosquitto_hash("x") != mosquitto_hash("x")


def test_file_entries_are_replaced_not_duplicated() -> None:
    """Provisioning again replaces a gateway's password line and ACL block and keeps the others."""
    pw = with_password_entry("other:$7$1$a$b\n", "s.g", "$7$old")
    pw = with_password_entry(pw, "s.g", "$7$new")
    assert pw == "other:$7$1$a$b\ns.g:$7$new\n"
    acl = with_acl_entry("user ingest\ntopic read fw/v1/#\n", "s.g", "fw/v1/s/g/")
    acl = with_acl_entry(acl, "s.h", "fw/v1/s/h/")
    acl = with_acl_entry(acl, "s.g", "fw/v1/s/g/")
    assert acl.count("user s.g") == 1 and acl.count("user s.h") == 1 and "user ingest" in acl


def test_unknown_site_is_refused(db_url: str, tmp_path: Path) -> None:
    """A gateway cannot be provisioned for a site that does not exist; nothing is written."""
    with pytest.raises(ProvisionError, match="does not exist"):
        provision(db_url, "s-nosuch", "gw-1", tmp_path / "gw.yaml", mqtt_url="mqtt://127.0.0.1:1883")
    assert not (tmp_path / "gw.yaml").exists()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[PrivateMosquitto, Path, Path]]:
    """Our own Mosquitto with a password file and an ACL, anonymous access off."""
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    pw.write_text(with_password_entry("", "ingest", mosquitto_hash("ingest-pw")))
    pw.chmod(0o600)
    acl.write_text("user ingest\ntopic read fw/v1/#\n")
    acl.chmod(0o600)
    with PrivateMosquitto(password_file=pw, acl_file=acl, workdir=tmp_path / "broker") as b:
        yield b, pw, acl


def _client(port: int, user: str, password: str, cid: str) -> mqtt.Client:
    """A client connected as ``user`` (CONNACK received: refused credentials fail here, naming the reason)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    client.username_pw_set(user, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_until(client.is_connected, 5, what=f"the broker to accept {user}")
    return client


def test_gateway_can_only_publish_under_its_own_prefix(
    db_url: str, tmp_path: Path, uid: str, broker: tuple[PrivateMosquitto, Path, Path]
) -> None:
    """Gateway A publishes under its own prefix; what it publishes as gateway B never reaches a subscriber."""
    mosquitto, pw, acl = broker
    port = mosquitto.port
    site = f"s-{uid}"
    _site(db_url, site)
    cfg_a, cfg_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    url = mosquitto.url
    a = provision(db_url, site, "gw-a", cfg_a, mqtt_url=url, password_file=pw, acl_file=acl)
    provision(db_url, site, "gw-b", cfg_b, mqtt_url=url, password_file=pw, acl_file=acl)
    mosquitto.reload()  # SIGHUP: mosquitto rereads password and ACL files

    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT c.password_hash, c.mqtt_username FROM gateway_credentials c JOIN gateways g ON g.id = c.gateway_id"
            " WHERE g.slug = 'gw-a'"
        ).fetchone()
    assert row is not None and verify_mosquitto_hash(a.password, row[0]) and a.password not in row[0]

    # The written config carries working credentials.
    parts = mqtt_parts(yaml.safe_load(cfg_a.read_text())["mqtt_url"])
    got: queue.Queue[str] = queue.Queue()
    subscribed = threading.Event()
    sub = _client(port, "ingest", "ingest-pw", f"ingest-{uid}")
    sub.on_message = lambda c, u, m: got.put(m.topic)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe("fw/v1/#", qos=1)
    gw = _client(port, parts["username"], parts["password"], f"gw-a-{uid}")
    wait_until(subscribed.is_set, 5, what="the subscriber's SUBACK")
    gw.publish(f"fw/v1/{site}/gw-b/telemetry", b"forged", qos=1).wait_for_publish(3)
    gw.publish(f"fw/v1/{site}/gw-a/telemetry", b"mine", qos=1).wait_for_publish(3)
    first = got.get(timeout=5)
    time.sleep(0.3)  # time must pass: a forged message that slipped through could only show up late
    topics = [first] + [got.get_nowait() for _ in range(got.qsize())]
    for c in (gw, sub):
        c.loop_stop()
        c.disconnect()
    assert topics == [f"fw/v1/{site}/gw-a/telemetry"]


def test_cli_provisions_and_reprovisioning_rotates(db_url: str, tmp_path: Path, uid: str, monkeypatch) -> None:
    """`fieldwatch gateway provision` writes a config; running it again rotates the password."""
    site = f"s-{uid}"
    _site(db_url, site)
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    out = tmp_path / "gw.yaml"
    args = ["gateway", "provision", "--site", site, "--name", "gw-c", "--out", str(out), "--mqtt-url", "mqtt://h:1"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    pw1 = mqtt_parts(yaml.safe_load(out.read_text())["mqtt_url"])["password"]
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "rotated" in second.output
    data = yaml.safe_load(out.read_text())
    assert data["gateway"] == "gw-c" and mqtt_parts(data["mqtt_url"])["password"] != pw1
    assert (out.stat().st_mode & 0o777) == 0o600
    # Once devices are added it is a valid gateway config.
    data["devices"] = [{"name": "pump-1", "host": "127.0.0.1", "profile": "pump-p100"}]
    out.write_text(yaml.safe_dump(data))
    assert load_config(out).site == site
    bad = CliRunner().invoke(app, [*args[:3], "s-nosuch0", *args[4:]])
    assert bad.exit_code == 2 and "does not exist" in bad.output
