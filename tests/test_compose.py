"""docker-compose.yml stays valid, refers only to files that exist, and is safe to expose as shipped.

There is no container engine here: `docker compose config` (which needs none) resolves the file with
a test env file, and the properties are asserted on what it resolves to. The compose broker's
configuration and start script are run for real, against the local Mosquitto binary.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.brokers import mosquitto_binary
from tests.support.ports import free_port
from tests.support.tls import TestCA
from tests.support.waits import wait_until

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROFILES = ([], ["--profile", "edge"], ["--profile", "scaled"])
#: Values for every secret .env.example names; none of them may appear in a committed file.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-test-secret-4f1c",
    "MQTT_INGEST_PASSWORD": "ingest-test-secret-9a2e",
    "MQTT_GATEWAY_PASSWORD": "gateway-test-secret-7d3b",
}
#: The user id of the fieldwatch image (Dockerfile) and of the images we run as they ship.
FIELDWATCH_UID = "10001"


def _compose_cmd() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("no docker compose to validate with: install Debian's docker-compose (.ci/run does)")


def _env_file(tmp_path: Path, values: dict[str, str]) -> Path:
    path = tmp_path / "compose.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def _compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker compose --env-file ENV_FILE -f docker-compose.yml ARGS`, with no secret from our own environment."""
    cmd = [*_compose_cmd(), "--env-file", str(env_file), "-f", str(COMPOSE), *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)


def _resolved(tmp_path: Path) -> dict[str, Any]:
    """The compose file as compose resolves it with every profile and the test secrets."""
    res = _compose(_env_file(tmp_path, SECRETS), "--profile", "edge", "--profile", "scaled", "config")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = yaml.safe_load(res.stdout)
    return doc


def _example_keys() -> list[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [ln.split("=", 1)[0] for ln in lines if ln and not ln.startswith("#")]


def test_compose_file_parses(tmp_path: Path) -> None:
    """`docker compose config` accepts the file, with and without profiles (no engine needed)."""
    env_file = _env_file(tmp_path, SECRETS)
    for profile in PROFILES:
        res = _compose(env_file, *profile, "config", "-q")
        assert res.returncode == 0, res.stderr


def test_compose_mounts_exist() -> None:
    """Every bind-mounted file in the compose file is in the repository."""
    doc = yaml.safe_load(COMPOSE.read_text())
    for name, svc in doc["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"service {name} mounts missing {src}"


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_a_missing_secret_stops_compose_naming_it(tmp_path: Path, secret: str) -> None:
    """Each secret left empty (as in .env.example) stops compose with a message naming it and .env."""
    res = _compose(_env_file(tmp_path, {**SECRETS, secret: ""}), "config", "-q")
    assert res.returncode != 0
    assert f"set {secret} in .env" in res.stderr, res.stderr


def test_the_example_env_file_lists_every_secret_empty_and_env_is_ignored() -> None:
    """.env.example names every secret the compose file requires, with no value; .env is git-ignored."""
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required == set(SECRETS)
    example = dict(ln.split("=", 1) for ln in (ROOT / ".env.example").read_text().splitlines() if ln and ln[0] != "#")
    assert {k: example.get(k) for k in required} == dict.fromkeys(required, "")
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode
    assert ignored == 0, ".env must be git-ignored"


def test_secrets_come_only_from_the_env_file(tmp_path: Path) -> None:
    """The resolved stack carries the env file's secrets, and no committed file holds a password of its own."""
    doc = _resolved(tmp_path)
    env = {name: svc.get("environment", {}) for name, svc in doc["services"].items()}
    assert env["timescaledb"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    assert f":{SECRETS['POSTGRES_PASSWORD']}@timescaledb" in env["api"]["FIELDWATCH_DATABASE_URL"]
    assert f"ingest:{SECRETS['MQTT_INGEST_PASSWORD']}@mosquitto" in env["ingest"]["FIELDWATCH_MQTT_URL"]
    assert f":{SECRETS['MQTT_GATEWAY_PASSWORD']}@mosquitto" in env["gateway"]["FIELDWATCH_MQTT_URL"]
    text = COMPOSE.read_text()
    assert not re.search(r"^\s*\w*PASSWORD\w*:\s*(?!\$\{)\S", text, flags=re.M), "a password in the compose file"
    assert not re.search(r"://[^:/\s]+:(?!\$\{)[^@\s]+@", text), "a URL with a literal password"


def _port(entry: str | dict[str, Any]) -> str:
    """``[HOST_IP:]PUBLISHED:TARGET/PROTOCOL``, from either form compose prints."""
    if isinstance(entry, str):
        return entry if "/" in entry else f"{entry}/tcp"
    host = f"{entry['host_ip']}:" if entry.get("host_ip") else ""
    return f"{host}{entry['published']}:{entry['target']}/{entry.get('protocol', 'tcp')}"


def test_only_the_api_and_the_broker_are_published(tmp_path: Path) -> None:
    """No profile publishes the database; plaintext ports are published on loopback only, TLS MQTT anywhere."""
    doc = _resolved(tmp_path)
    published: dict[str, list[str]] = {
        name: [_port(p) for p in svc["ports"]] for name, svc in doc["services"].items() if svc.get("ports")
    }
    assert published == {
        "api": ["127.0.0.1:8000:8000/tcp"],
        "mosquitto": ["127.0.0.1:1883:1883/tcp", "8883:8883/tcp"],
    }


def test_every_container_runs_unprivileged(tmp_path: Path) -> None:
    """Each service names a non-root user; ours run as the image's fieldwatch user, read-only, without capabilities."""
    doc = _resolved(tmp_path)
    for name, svc in doc["services"].items():
        user = str(svc.get("user", ""))
        assert user and user.split(":")[0] not in ("0", "root"), f"{name} runs as root"
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        if name != "timescaledb":  # the database's entrypoint writes outside its volume at first start
            assert svc.get("read_only") is True and svc.get("cap_drop") == ["ALL"], name
        if str(svc.get("image", "")).startswith("fieldwatch"):
            assert user == f"{FIELDWATCH_UID}:{FIELDWATCH_UID}", name


def test_the_image_runs_as_its_own_unprivileged_user() -> None:
    """The Dockerfile creates the fieldwatch user, switches to it last, and copies every package it installs."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"useradd .*--uid {FIELDWATCH_UID}\b", text)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] == f"{FIELDWATCH_UID}:{FIELDWATCH_UID}"
    assert text.rindex("USER") > text.rindex("RUN pip install")
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in (p.rstrip("*") for p in include):
        assert f"COPY {package} ./{package}" in text, f"the image would lack {package}"


# --- the compose broker, run for real -------------------------------------------------------------


class ComposeBroker:
    """deploy/mosquitto/compose-start.sh with the compose broker config, on local ports and paths."""

    def __init__(self, tmp_path: Path, *, with_tls: TestCA | None = None) -> None:
        self.port, self.tls_port = free_port(), free_port()
        run, data, certs = tmp_path / "run", tmp_path / "data", tmp_path / "certs"
        for d in (run, data, certs):
            d.mkdir(parents=True)
        if with_tls is not None:
            server = with_tls.server()
            shutil.copy(server.cert, certs / "server.crt")
            shutil.copy(server.key, certs / "server.key")
        conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
        assert "\nlistener 1883\n" in conf
        conf = (
            conf.replace("\nlistener 1883\n", f"\nlistener {self.port} 127.0.0.1\n")
            .replace("/mosquitto/run", str(run))
            .replace("/mosquitto/config", str(ROOT / "deploy/mosquitto"))
            .replace("/mosquitto/data", str(data))
        )
        # As root, mosquitto would drop to its own user and lose access to the test's files.
        (tmp_path / "mosquitto.conf").write_text(f"user {getpass.getuser()}\n{conf}")
        self.log = tmp_path / "broker.log"
        env = {
            "PATH": f"{Path(mosquitto_binary()).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "FW_MQTT_CONF": str(tmp_path / "mosquitto.conf"),
            "FW_MQTT_RUN": str(run),
            "FW_MQTT_CERTS": str(certs),
            "FW_MQTT_TLS_LISTENER": f"{self.tls_port} 127.0.0.1",
            **SECRETS,
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["/bin/sh", str(ROOT / "deploy/mosquitto/compose-start.sh")], env=env, stdout=out, stderr=out
            )
        try:
            wait_until(self._listening, 10, what="the compose broker to listen", observe=self.log.read_text)
        except BaseException:
            self.close()
            raise

    def _listening(self) -> bool:
        assert self.proc.poll() is None, f"the broker exited: {self.log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


@pytest.fixture
def compose_broker(tmp_path: Path) -> Iterator[ComposeBroker]:
    broker = ComposeBroker(tmp_path)
    yield broker
    broker.close()


def _connect(port: int, user: str | None, password: str | None, tls: TestCA | None = None) -> tuple[mqtt.Client, str]:
    """A connected client (loop running) and the broker's answer to its CONNECT."""
    answer: list[str] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user is not None:
        c.username_pw_set(user, password)
    if tls is not None:
        c.tls_set(ca_certs=str(tls.ca_file))
    c.on_connect = lambda client, userdata, flags, reason, props: answer.append(str(reason))
    c.connect("127.0.0.1", port, 10)
    c.loop_start()
    wait_until(lambda: bool(answer), 5, what="CONNACK")
    return c, answer[0]


def test_compose_broker_refuses_anonymous_and_wrong_passwords(compose_broker: ComposeBroker) -> None:
    """The compose broker answers "Not authorized" to a client without a login or with a wrong password."""
    for user, password in ((None, None), ("ingest", "guess")):
        c, answer = _connect(compose_broker.port, user, password)
        c.loop_stop()
        assert answer == "Not authorized", (user, answer)


def test_compose_broker_confines_each_login_to_its_topics(compose_broker: ComposeBroker) -> None:
    """ingest receives the compose gateway's telemetry through its shared subscription; the gateway's login
    cannot publish under another gateway's prefix."""
    received: list[str] = []
    ingest, answer = _connect(compose_broker.port, "ingest", SECRETS["MQTT_INGEST_PASSWORD"])
    assert answer == "Success"
    ingest.on_message = lambda client, userdata, msg: received.append(msg.topic)
    subscribed: list[bool] = []
    ingest.on_subscribe = lambda *args: subscribed.append(True)
    ingest.subscribe("$share/ingest/fw/v1/+/+/telemetry", qos=1)
    wait_until(lambda: bool(subscribed), 5, what="SUBACK")
    gateway, answer = _connect(compose_broker.port, "compose-site.gw-compose", SECRETS["MQTT_GATEWAY_PASSWORD"])
    assert answer == "Success"
    gateway.publish("fw/v1/other-site/gw-x/telemetry", b"{}", qos=1).wait_for_publish(5)
    gateway.publish("fw/v1/compose-site/gw-compose/telemetry", b"{}", qos=1).wait_for_publish(5)
    wait_until(lambda: bool(received), 5, what="the gateway's own telemetry at ingest")
    for c in (ingest, gateway):
        c.disconnect()
        c.loop_stop()
    assert received == ["fw/v1/compose-site/gw-compose/telemetry"]


def test_compose_broker_adds_a_tls_listener_when_a_certificate_is_mounted(tmp_path: Path) -> None:
    """With server.crt and server.key in the certificates directory, logins work over TLS verified against the CA."""
    ca = TestCA(tmp_path / "ca")
    broker = ComposeBroker(tmp_path / "broker", with_tls=ca)
    try:
        c, answer = _connect(broker.tls_port, "ingest", SECRETS["MQTT_INGEST_PASSWORD"], tls=ca)
        c.disconnect()
        c.loop_stop()
        assert answer == "Success"
        assert "TLS listener" in broker.log.read_text()
    finally:
        broker.close()


def test_compose_broker_without_certificates_says_so(compose_broker: ComposeBroker) -> None:
    """With no certificate mounted the broker starts with its plaintext listener only, and says so."""
    assert "plaintext listener only" in compose_broker.log.read_text()
