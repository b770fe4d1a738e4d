"""docs/install.md's newcomer path, as far as it runs here, with the guide's own commands and files as
subprocesses: `db create`, `db migrate`, `doctor` against a broker with logins, `fleet import`, `gateway
provision`, `skills add`, `technicians add`, `rules apply`, `users create`, `serve`, then readings sent with
the gateway's login until a ticket is assigned, seen in the API and on the console's Tickets page."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fieldwatch.mosquitto_auth import mosquitto_hash
from fwcore.contract import Batch, Point, encode_batch, topic
from fwcore.db import drop_database, with_database
from fwcore.settings import mqtt_parts
from tests.support.brokers import PrivateMosquitto
from tests.support.ports import free_port
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


def _doc_file(name: str) -> str:
    """The YAML block of docs/install.md whose first line is ``# name``: the test applies what the guide shows."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "install.md").read_text(), re.S)
    found = [b for b in blocks if b.startswith(f"# {name}\n")]
    assert len(found) == 1, f"docs/install.md has no single yaml block starting '# {name}'"
    return found[0]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_install_md_walk(
    admin_db_url: str, uid: str, tmp_path: Path, broker: tuple[PrivateMosquitto, Path, Path]
) -> None:
    """Following docs/install.md's commands on a new database ends with a bearing reading over the rule's threshold,
    sent with the provisioned gateway's login, as a ticket assigned to the technician with the required skill."""
    mosquitto, pw, acl = broker
    name = f"fwinstall_{uid}"
    api_port = free_port()
    env = {
        **os.environ,
        "COLUMNS": "200",
        "FIELDWATCH_DATABASE_URL": with_database(admin_db_url, name),
        "FIELDWATCH_MQTT_URL": mosquitto.url_as("ingest", "ingest-pw"),
        "FIELDWATCH_DEPLOYMENT_NAME": f"walk-{uid}",
        "FIELDWATCH_BROKER_USER": getpass.getuser(),  # the private broker runs as whoever runs the tests
        "FIELDWATCH_CONSOLE_ENABLED": "true",  # an installation's default (tests/conftest.py turns it off)
    }

    def fieldwatch(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [FIELDWATCH, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path, input=stdin
        )
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res

    try:
        # 4. The database; 6. doctor.
        assert "next: fieldwatch db migrate" in fieldwatch("db", "create").stderr
        fieldwatch("db", "migrate")
        report = fieldwatch("doctor").stdout
        assert "FAIL" not in report and "up to date" in report
        # 7. An API token.
        token = fieldwatch("tokens", "create", "--role", "admin", "--name", "me").stdout.strip().splitlines()[-1]
        # 8. The fleet from the guide's file, then the gateway's login.
        (tmp_path / "fleet.yaml").write_text(_doc_file("fleet.yaml"))
        fieldwatch("fleet", "import", "fleet.yaml", "--dry-run")
        assert "4 created" in fieldwatch("fleet", "import", "fleet.yaml").stdout
        out = tmp_path / "gw-01.yaml"
        fieldwatch(
            "gateway", "provision", "--site", "plant-north", "--name", "gw-01", "--out", str(out),
            "--password-file", str(pw), "--acl-file", str(acl), "--mqtt-url", mosquitto.url,
        )  # fmt: skip
        mosquitto.reload()
        # 9. Skills, a technician (and one nearer without the skill, who must not get the job), the rule.
        fieldwatch("skills", "add", "pump_mech", "--name", "Pump mechanics")
        fieldwatch("skills", "add", "electrical", "--name", "Electrical")
        fieldwatch("technicians", "add", "Ana Ortiz", "--email", "ana@example.com", "--lat", "41.88", "--lon", "-87.63",
                   "--skill", "pump_mech=3")  # fmt: skip
        fieldwatch("technicians", "add", "Ben Near", "--email", "ben@example.com", "--lat", "41.90", "--lon", "-87.70",
                   "--skill", "electrical=3")  # fmt: skip
        (tmp_path / "rules.yaml").write_text(_doc_file("rules.yaml"))
        fieldwatch("rules", "apply", "rules.yaml", "--dry-run")
        fieldwatch("rules", "apply", "rules.yaml", "--yes")
        assert "Ana Ortiz" in fieldwatch("technicians", "list").stdout
        fieldwatch("users", "create", "me", "--role", "dispatcher", "--password-stdin", stdin="correct horse battery\n")

        # 7. The services: `fieldwatch serve` (as the unit runs it), then readings from the gateway's login.
        with (tmp_path / "serve.log").open("w") as log:
            serve = subprocess.Popen(
                [FIELDWATCH, "serve", "--no-migrate", "--port", str(api_port)],
                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        try:
            api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {token}"})
            with api:
                wait_until(
                    lambda: api.get("/api/v1/tickets").status_code == 200, 30, what="the API to answer",
                    ignore=(httpx.TransportError,), interval=0.2,
                )  # fmt: skip
                assert _tickets(api) == []
                _send_hot_bearing(out, uid)

                def assigned() -> dict | None:
                    items = _tickets(api)
                    if items and items[0]["status"] == "assigned":
                        return api.get(f"/api/v1/tickets/{items[0]['id']}").json()
                    return None

                ticket = wait_until(
                    assigned, 60, what="a ticket assigned to a technician", interval=0.3,
                    observe=lambda: (_tickets(api), (tmp_path / "serve.log").read_text()[-3000:]),
                )  # fmt: skip
                # The console: the user of step 9 signs in and the Tickets page names the technician.
                page = httpx.Client(base_url=f"http://127.0.0.1:{api_port}")
                with page:
                    signed_in = page.post("/auth/signin", data={"username": "me", "password": "correct horse battery"})
                    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/", signed_in.text
                    tickets_page = page.get("/tickets")
                    assert tickets_page.status_code == 200 and "Ana Ortiz" in tickets_page.text
            assert ticket["assignment"]["technician_name"] == "Ana Ortiz"
            assert "evaluating" in fieldwatch("rules", "health", "hot bearing").stdout
        finally:
            serve.terminate()
            assert serve.wait(30) == 0, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        drop_database(admin_db_url, name)


def _tickets(api: httpx.Client) -> list[dict]:
    res = api.get("/api/v1/tickets")
    res.raise_for_status()
    body = res.json()
    return list(body["items"] if isinstance(body, dict) else body)


def _send_hot_bearing(config: Path, uid: str) -> None:
    """Publish, as the gateway its written config describes, P-101's bearing at 95 °C for 30 s of source time."""
    cfg = yaml.safe_load(config.read_text())
    parts = mqtt_parts(cfg["mqtt_url"])
    now = int(time.time() * 1000)
    points = [Point("P-101", "bearing_temp", now - 30_000 + i * 5_000, 95.0) for i in range(7)]
    batch = Batch(gateway=cfg["gateway"], site=cfg["site"], seq=1, points=points, sent_at=now)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=parts["username"], protocol=mqtt.MQTTv5)
    client.username_pw_set(parts["username"], parts["password"])
    client.connect(parts["host"], parts["port"])
    client.loop_start()
    try:
        wait_until(client.is_connected, 5, what="the broker to accept the provisioned gateway")
        info = client.publish(topic(cfg["site"], cfg["gateway"], "telemetry"), encode_batch(batch), qos=1)
        info.wait_for_publish(5)
        assert info.is_published(), "the broker did not acknowledge the gateway's readings"
    finally:
        client.loop_stop()
        client.disconnect()


def test_install_md_names_every_step_and_shipped_file() -> None:
    """docs/install.md walks install → db create/migrate → doctor → provision → skills, technician → rule →
    ticket, and every deploy/ file it names exists."""
    text = (ROOT / "docs" / "install.md").read_text()
    for step in (
        "fieldwatch db create",
        "fieldwatch db migrate",
        "fieldwatch doctor",
        "fieldwatch fleet import",
        "fieldwatch gateway provision",
        "fieldwatch skills add",
        "fieldwatch technicians add",
        "fieldwatch rules apply",
        "GET /api/v1/tickets",
        "fieldwatch users create",
        "pg_dump",
        "docker compose",
    ):
        assert step in text, step
    for path in set(re.findall(r"deploy/[\w./@-]+[\w@]", text)):
        assert (ROOT / path).exists(), path
