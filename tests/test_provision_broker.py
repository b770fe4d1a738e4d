"""Provisioning against a real Mosquitto that runs as its own user, configured as shipped (deploy/mosquitto)."""

from __future__ import annotations

import grp
import os
import pwd
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
from typer.testing import CliRunner

from fieldwatch.cli import app
from fieldwatch.mosquitto_auth import mosquitto_hash
from fieldwatch.provision import BrokerFiles, provision, revoke
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

    def provision(self, name: str, *, site: str | None = None, sparkplug: bool = False) -> tuple[str, str]:
        """Provision gateway ``name`` as the docs say; its (username, password) from the written config."""
        out = self.etc / f"{name}.yaml"
        site = site or self.site
        provision(
            self.db_url, site, name, out, mqtt_url=f"mqtt://127.0.0.1:{self.gateway_port}",
            broker=BrokerFiles(self.passwd, self.acl), sparkplug=(site, name) if sparkplug else "keep",
        )  # fmt: skip
        self.configs[name] = out
        return self.login(name)

    def files(self, *, reload: bool = False) -> BrokerFiles:
        """The gateway listener's files; ``reload``: SIGHUP the broker after writing them, as --reload does."""
        assert self.broker is not None
        return BrokerFiles(self.passwd, self.acl, reload_command=f"kill -HUP {self.broker.pid}" if reload else None)

    def login(self, name: str) -> tuple[str, str]:
        parts = mqtt_parts(yaml.safe_load(self.configs[name].read_text())["mqtt_url"])
        return parts["username"], parts["password"]


@pytest.fixture
def etc() -> Iterator[Path]:
    """An /etc/mosquitto of our own (the broker's user may enter it) with the server listener's files:
    logins `ingest` (reads and writes fw/v1/#) and `scada` (a Sparkplug host), root:mosquitto 0640."""
    etc = Path(tempfile.mkdtemp(prefix="fw-etc-mosquitto-"))
    etc.chmod(0o755)
    mosquitto_gid = grp.getgrnam("mosquitto").gr_gid
    server_pw = etc / "fieldwatch-server.passwd"
    server_pw.write_text(f"ingest:{mosquitto_hash('ingest-pw')}\nscada:{mosquitto_hash('scada-pw')}\n")
    (etc / "fieldwatch-server.acl").write_text(
        "user ingest\ntopic readwrite fw/v1/#\nuser scada\ntopic read spBv1.0/#\n"
    )
    for f in (server_pw, etc / "fieldwatch-server.acl"):
        os.chown(f, 0, mosquitto_gid)
        f.chmod(0o640)
    yield etc
    shutil.rmtree(etc, ignore_errors=True)


def _broker(etc: Path, gateway_port: int, server_port: int) -> PrivateMosquitto:
    """deploy/mosquitto/fieldwatch.conf with these ports and ``etc``'s files, run as `mosquitto` (not started)."""
    conf = shipped_conf(
        {1883: gateway_port, 1884: server_port}, {f"/etc/mosquitto/{p}": etc / p for p in SHIPPED_PATHS}
    )
    return PrivateMosquitto(run_as="mosquitto", conf=conf, port=server_port)


@pytest.fixture
def fleet(db_url: str, uid: str, etc: Path) -> Iterator[Fleet]:
    """Gateways A, B and C provisioned with the default file settings, then the broker started as `mosquitto`."""
    site = f"s-{uid}"
    _site(db_url, site)
    f = Fleet(db_url, site, etc, free_port(), free_port())
    for name in ("gw-a", "gw-b", "gw-c"):
        f.provision(name)
    f.broker = _broker(etc, f.gateway_port, f.server_port)
    try:
        f.broker.start()
        yield f
    finally:
        f.broker.close()


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
    assert fleet.broker is not None
    uids = Path(f"/proc/{fleet.broker.pid}/status").read_text().split("Uid:")[1].split()[:2]
    assert {int(u) for u in uids} == {pwd.getpwnam("mosquitto").pw_uid}, "the broker does not run as mosquitto"
    clients = {name: Client(fleet.gateway_port, *fleet.login(name)) for name in ("gw-a", "gw-b", "gw-c")}
    assert all(c.accepted for c in clients.values()), {n: c.events for n, c in clients.items()}
    fleet.provision("gw-d")
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


def test_a_revoked_gateway_is_refused_at_once(fleet: Fleet, ingest: Client) -> None:
    """`revoke --reload` disconnects the gateway at once and refuses its next login; the others stay connected."""
    a = Client(fleet.gateway_port, *fleet.login("gw-a"))
    b = Client(fleet.gateway_port, *fleet.login("gw-b"))
    try:
        assert a.accepted and b.accepted
        done = revoke(fleet.db_url, fleet.site, "gw-a", broker=fleet.files(reload=True))
        assert done.username == f"{fleet.site}.gw-a"
        wait_until(lambda: len(a.events) > 1, 5, what="the revoked gateway to be disconnected")
        assert a.events[1].startswith("disconnect")
        again = Client(fleet.gateway_port, *fleet.login("gw-a"))
        assert again.events[0] == "connect:Not authorized", again.events
        again.close()
        b.publish(f"fw/v1/{fleet.site}/gw-b/telemetry", b"still here")
        assert _received(ingest, {f"fw/v1/{fleet.site}/gw-b/telemetry"}) == {f"fw/v1/{fleet.site}/gw-b/telemetry"}
        assert b.events == ["connect:Success"]
    finally:
        a.close()
        b.close()


def test_a_sparkplug_gateway_cannot_publish_as_another_node(fleet: Fleet) -> None:
    """With C and D provisioned as Sparkplug nodes (and each provisioned again), C's births reach the host
    and what C publishes as D (births, data, commands) does not."""
    for name in ("gw-c", "gw-d", "gw-d", "gw-c"):
        fleet.provision(name, sparkplug=True)
    assert fleet.broker is not None
    fleet.broker.reload()
    host = Client(fleet.server_port, "scada", "scada-pw", "scada-host")
    host.client.subscribe("spBv1.0/#", qos=1)
    wait_until(host.subscribed.is_set, 5, what="the host's SUBACK")
    c = Client(fleet.gateway_port, *fleet.login("gw-c"))
    try:
        site = fleet.site
        for topic in (f"spBv1.0/{site}/NBIRTH/gw-d", f"spBv1.0/{site}/DDATA/gw-d/pump-1", f"spBv1.0/{site}/NCMD/gw-d"):
            c.publish(topic, b"forged")
        own = {f"spBv1.0/{site}/NBIRTH/gw-c", f"spBv1.0/{site}/DDATA/gw-c/pump-1"}
        for topic in own:
            c.publish(topic, b"mine")
        assert _received(host, own) == own
    finally:
        c.close()
        host.close()


async def test_gateway_and_ingest_work_through_the_shipped_listeners(fleet: Fleet, tmp_path: Path) -> None:
    """A provisioned gateway on the gateway listener (client id = its login) and two ingest workers sharing
    one login on the server listener: the gateway's points are stored and every batch is acknowledged."""
    from gateway import Gateway, load_config
    from ingest import IngestWorker
    from simulators import PumpModbusServer, PumpModel
    from tests.support.registry import register
    from tests.support.waits import wait_until_async

    uid = fleet.site.removeprefix("s-")
    reg = register(fleet.db_url, uid, devices=("pump-1",))
    fleet.provision(reg.gateway, site=reg.site)
    assert fleet.broker is not None
    fleet.broker.reload()
    config_path = fleet.configs[reg.gateway]
    data = yaml.safe_load(config_path.read_text())
    sim = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1)}, update_interval=0.05)
    await sim.start()
    data.update(poll_interval=0.2, state_dir=str(tmp_path), devices=[
        {"name": "pump-1", "host": "127.0.0.1", "port": sim.port, "profile": "pump-p100"}
    ])  # fmt: skip
    config_path.write_text(yaml.safe_dump(data))
    server_url = f"mqtt://ingest:ingest-pw@127.0.0.1:{fleet.server_port}"
    workers = [
        IngestWorker(fleet.db_url, server_url, client_id=f"ingest-{uid}-{i}", share_group=f"ingest-{uid}",
                     site_filter=reg.site, batch_max_wait_ms=20, session_expiry_s=60)
        for i in (1, 2)
    ]  # fmt: skip
    for w in workers:
        w.start()
    gateway = Gateway(load_config(config_path))
    try:
        await gateway.start()
        await gateway.wait_connected()
        assert gateway.publisher is not None and gateway.publisher.client_id == f"{reg.site}.{reg.gateway}"
        await wait_until_async(lambda: gateway.stats.batches_acked >= 5, 20, what="ingest to acknowledge 5 batches")
        with psycopg.connect(fleet.db_url) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM telemetry t JOIN series s ON s.id = t.series_id WHERE s.device_id = %s",
                (reg.devices["pump-1"],),
            ).fetchone()
        assert stored is not None and stored[0] > 0
        assert gateway.stats.mqtt_reconnects == 0
    finally:
        await gateway.stop()
        for w in workers:
            w.stop()
        await sim.stop()


def test_the_documented_steps_work(db_url: str, uid: str, etc: Path, tmp_path: Path, monkeypatch) -> None:
    """docs/gateway.md as written: `sync-broker` creates the empty gateway files, the broker starts on them,
    `provision --reload` (settings from the environment) admits the new gateway with the config it wrote,
    `revoke --reload` shuts it out."""
    site = f"s-{uid}"
    _site(db_url, site)
    gateway_port, server_port = free_port(), free_port()
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("FIELDWATCH_BROKER_PASSWORD_FILE", str(etc / "fieldwatch-gateways.passwd"))
    monkeypatch.setenv("FIELDWATCH_BROKER_ACL_FILE", str(etc / "fieldwatch-gateways.acl"))
    created = CliRunner().invoke(app, ["gateway", "sync-broker"])
    assert created.exit_code == 0, created.output
    with _broker(etc, gateway_port, server_port) as broker:
        monkeypatch.setenv("FIELDWATCH_BROKER_RELOAD_COMMAND", f"kill -HUP {broker.pid}")
        out = tmp_path / "gw-01.yaml"
        args = ["--site", site, "--name", "gw-01"]
        done = CliRunner().invoke(
            app, ["gateway", "provision", *args, "--mqtt-url", f"mqtt://127.0.0.1:{gateway_port}", "--out", str(out),
                  "--reload"],
        )  # fmt: skip
        assert done.exit_code == 0 and "the broker reread its files" in done.output, done.output
        parts = mqtt_parts(yaml.safe_load(out.read_text())["mqtt_url"])
        gw = Client(parts["port"], parts["username"], parts["password"])
        assert gw.accepted, gw.events
        gone = CliRunner().invoke(app, ["gateway", "revoke", *args, "--reload"])
        assert gone.exit_code == 0, gone.output
        wait_until(lambda: len(gw.events) > 1, 5, what="the revoked gateway to be disconnected")
        gw.close()
