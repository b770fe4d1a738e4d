"""Provisioning against a real Mosquitto that runs as its own user, configured as shipped (deploy/mosquitto)."""

from __future__ import annotations

import grp
import os
import queue
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fieldwatch.mosquitto_auth import mosquitto_hash
from fieldwatch.provision import BrokerFiles, provision
from fwcore.settings import mqtt_parts
from tests.support.brokers import PrivateMosquitto, shipped_conf
from tests.support.ports import free_port
from tests.support.waits import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starting mosquitto as its own user needs root")

SHIPPED_PATHS = (
    "fieldwatch-gateways.passwd",
    "fieldwatch-gateways.acl",
    "fieldwatch-server.passwd",
    "fieldwatch-server.acl",
)


def _site(db_url: str, slug: str) -> None:
    with psycopg.connect(db_url) as conn:
        client = conn.execute(
            "INSERT INTO clients (name, segment) VALUES (%s, 'standard') RETURNING id", (f"c-{slug}",)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, %s, %s, 0, 0)",
            (client, slug, slug),
        )


@dataclass
class Fleet:
    """A broker as shipped, its files in an /etc-like directory, and the gateways provisioned so far."""

    db_url: str
    site: str
    etc: Path
    gateway_port: int
    server_port: int
    configs: dict[str, Path] = field(default_factory=dict)
    broker: PrivateMosquitto | None = None

    @property
    def passwd(self) -> Path:
        return self.etc / "fieldwatch-gateways.passwd"

    @property
    def acl(self) -> Path:
        return self.etc / "fieldwatch-gateways.acl"

    def provision(self, name: str) -> tuple[str, str]:
        """Provision gateway ``name`` as the docs say; its (username, password) from the written config."""
        out = self.etc / f"{name}.yaml"
        provision(
            self.db_url, self.site, name, out, mqtt_url=f"mqtt://127.0.0.1:{self.gateway_port}",
            broker=BrokerFiles(self.passwd, self.acl),
        )  # fmt: skip
        self.configs[name] = out
        return self.login(name)

    def login(self, name: str) -> tuple[str, str]:
        parts = mqtt_parts(yaml.safe_load(self.configs[name].read_text())["mqtt_url"])
        return parts["username"], parts["password"]


@pytest.fixture
def fleet(db_url: str, uid: str) -> Iterator[Fleet]:
    """Gateways A, B and C provisioned with the default file settings, then the broker started as `mosquitto`."""
    etc = Path(tempfile.mkdtemp(prefix="fw-etc-mosquitto-"))
    etc.chmod(0o755)  # like /etc/mosquitto: the broker's user may enter it
    mosquitto_gid = grp.getgrnam("mosquitto").gr_gid
    server_pw = etc / "fieldwatch-server.passwd"
    server_pw.write_text(f"ingest:{mosquitto_hash('ingest-pw')}\n")
    (etc / "fieldwatch-server.acl").write_text("user ingest\ntopic readwrite fw/v1/#\n")
    for f in (server_pw, etc / "fieldwatch-server.acl"):
        os.chown(f, 0, mosquitto_gid)
        f.chmod(0o640)
    site = f"s-{uid}"
    _site(db_url, site)
    f = Fleet(db_url, site, etc, free_port(), free_port())
    for name in ("gw-a", "gw-b", "gw-c"):
        f.provision(name)
    conf = shipped_conf(
        {1883: f.gateway_port, 1884: f.server_port}, {f"/etc/mosquitto/{p}": etc / p for p in SHIPPED_PATHS}
    )
    f.broker = PrivateMosquitto(run_as="mosquitto", conf=conf, port=f.server_port)
    try:
        f.broker.start()
        yield f
    finally:
        f.broker.close()
        shutil.rmtree(etc, ignore_errors=True)


class Client:
    """A paho client that records its connection outcomes and the messages it receives."""

    def __init__(self, port: int, user: str, password: str, client_id: str = "") -> None:
        self.events: list[str] = []
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, rc, p: self.events.append(f"connect:{rc}")
        self.client.on_disconnect = lambda c, u, f, rc, p: self.events.append(f"disconnect:{rc}")
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(lambda: bool(self.events), 5, what=f"the broker to answer {user}'s CONNECT")

    @property
    def accepted(self) -> bool:
        return self.events[0] == "connect:Success"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(3)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def ingest(fleet: Fleet) -> Iterator[Client]:
    """The server's subscriber on everything under fw/v1, on the server listener."""
    sub = Client(fleet.server_port, "ingest", "ingest-pw", "ingest-sub")
    assert sub.accepted, sub.events
    sub.client.subscribe("fw/v1/#", qos=1)
    wait_until(sub.subscribed.is_set, 5, what="the subscriber's SUBACK")
    yield sub
    sub.close()


def _received(sub: Client, expected: set[str], timeout: float = 5.0) -> set[str]:
    """Topics received until every ``expected`` one arrived; then whatever else came in a further 0.3 s."""
    got: set[str] = set()
    deadline = time.monotonic() + timeout
    while not expected <= got and time.monotonic() < deadline:
        try:
            got.add(sub.messages.get(timeout=max(0.01, deadline - time.monotonic()))[0])
        except queue.Empty:
            break
    time.sleep(0.3)  # time must pass: a message that should not have been delivered could only arrive late
    while not sub.messages.empty():
        got.add(sub.messages.get_nowait()[0])
    return got


def test_a_fourth_gateway_leaves_the_first_three_publishing(fleet: Fleet, ingest: Client) -> None:
    """Provisioning a fourth gateway and reloading keeps the first three connected and publishing, and lets
    all four (re)connect: the broker, running as its own user, can still read the rewritten files."""
    clients = {name: Client(fleet.gateway_port, *fleet.login(name)) for name in ("gw-a", "gw-b", "gw-c")}
    assert all(c.accepted for c in clients.values()), {n: c.events for n, c in clients.items()}
    fleet.provision("gw-d")
    assert fleet.broker is not None
    fleet.broker.reload()
    for name, c in clients.items():
        c.publish(f"fw/v1/{fleet.site}/{name}/telemetry", b"after the reload")
    clients["gw-d"] = Client(fleet.gateway_port, *fleet.login("gw-d"))
    clients["gw-d"].publish(f"fw/v1/{fleet.site}/gw-d/telemetry", b"new")
    try:
        expected = {f"fw/v1/{fleet.site}/{n}/telemetry" for n in ("gw-a", "gw-b", "gw-c", "gw-d")}
        assert _received(ingest, expected) == expected
        assert all(c.events == ["connect:Success"] for c in clients.values()), {n: c.events for n, c in clients.items()}
        clients.pop("gw-a").close()
        clients["gw-a"] = Client(
            fleet.gateway_port, *fleet.login("gw-a")
        )  # a fresh login, checked against the new files
        assert clients["gw-a"].accepted, clients["gw-a"].events
    finally:
        for c in clients.values():
            c.close()
    for path in (fleet.passwd, fleet.acl):
        st = path.stat()
        assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)) == (0, "mosquitto", 0o640)


def test_no_login_can_take_over_another_gateways_session(fleet: Fleet, ingest: Client) -> None:
    """Gateway B logging in with gateway A's client id does not knock A off, and B's publishes under
    A's prefix are dropped while A's own still arrive."""
    a = Client(fleet.gateway_port, *fleet.login("gw-a"), client_id=fleet.login("gw-a")[0])
    b = Client(fleet.gateway_port, *fleet.login("gw-b"), client_id=fleet.login("gw-a")[0])
    try:
        assert a.accepted and b.accepted
        b.publish(f"fw/v1/{fleet.site}/gw-a/telemetry", b"forged")
        a.publish(f"fw/v1/{fleet.site}/gw-a/health", b"mine")
        assert _received(ingest, {f"fw/v1/{fleet.site}/gw-a/health"}) == {f"fw/v1/{fleet.site}/gw-a/health"}
        assert a.events == ["connect:Success"], "gateway A was disconnected by B's login"
    finally:
        a.close()
        b.close()
