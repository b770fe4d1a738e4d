"""Helpers for the ingest tests: registry rows, a publisher, an ack listener, polling.

Every name (client, site, gateway slugs, client ids) carries the test's ``uid``
because the broker is shared and keeps persistent sessions across tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from fwcore.contract import Batch, Point, encode_batch, topic
from fwcore.settings import mqtt_parts

NOW_MS = int(time.time() * 1000)


@dataclass(frozen=True)
class Registered:
    """Registry rows inserted for one test."""

    site: str
    gateway: str
    gateway_id: int
    devices: dict[str, int]

    def topic(self, kind: str = "telemetry") -> str:
        return topic(self.site, self.gateway, kind)

    def batch(self, seq: int, points: list[Point], **kw: object) -> Batch:
        return Batch(gateway=self.gateway, site=self.site, seq=seq, points=points, **kw)  # type: ignore[arg-type]


def register(db_url: str, uid: str, devices: tuple[str, ...] = ("pump-1", "pump-2")) -> Registered:
    """Insert a client (segment gold), a site, a gateway and devices named with ``uid``."""
    site, gateway = f"site-{uid}", f"gw-{uid}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        (client_id,) = conn.execute(
            "INSERT INTO clients (name, segment) VALUES (%s, 'gold') RETURNING id", (f"client-{uid}",)
        ).fetchone()  # type: ignore[misc]
        (site_id,) = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude)"
            " VALUES (%s, %s, %s, 41.9, -87.6) RETURNING id",
            (client_id, site, f"Site {uid}"),
        ).fetchone()  # type: ignore[misc]
        (gw_id,) = conn.execute(
            "INSERT INTO gateways (site_id, slug) VALUES (%s, %s) RETURNING id", (site_id, gateway)
        ).fetchone()  # type: ignore[misc]
        ids = {}
        for key in devices:
            ids[key] = add_device(conn, site_id, gw_id, key)
    return Registered(site, gateway, gw_id, ids)


def add_device(conn: psycopg.Connection, site_id: int | None, gateway_id: int, key: str) -> int:
    """Register one more device on a gateway (``site_id`` None: the gateway's site)."""
    if site_id is None:
        (site_id,) = conn.execute("SELECT site_id FROM gateways WHERE id = %s", (gateway_id,)).fetchone()  # type: ignore[misc]
    (dev_id,) = conn.execute(
        "INSERT INTO devices (site_id, gateway_id, key, equipment_model) VALUES (%s, %s, %s, 'P100') RETURNING id",
        (site_id, gateway_id, key),
    ).fetchone()  # type: ignore[misc]
    return dev_id


def pts(device: str, tag: str, n: int, *, start_ms: int = NOW_MS - 60_000, value: float = 1.0) -> list[Point]:
    """``n`` points one second apart for one device and tag."""
    return [Point(device, tag, start_ms + i * 1000, value + i) for i in range(n)]


def scalar(db_url: str, query: str, params: tuple = ()) -> object:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _client(mqtt_url: str, client_id: str, *, protocol: str = "5", clean: bool = True) -> mqtt.Client:
    p = mqtt_parts(mqtt_url)
    if protocol == "5":
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.connect(p["host"], p["port"], 30, clean_start=clean)
    else:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean)
        c.connect(p["host"], p["port"], 30)
    return c


@contextmanager
def publisher(mqtt_url: str, client_id: str) -> Iterator[Callable[..., None]]:
    """A connected client; yields ``publish(topic, payload, retain=False)`` that waits for the PUBACK."""
    c = _client(mqtt_url, client_id)
    c.loop_start()

    def publish(topic_name: str, payload: bytes | Batch, retain: bool = False) -> None:
        data = encode_batch(payload) if isinstance(payload, Batch) else payload
        info = c.publish(topic_name, data, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published(), f"publish to {topic_name} not acknowledged by the broker"

    try:
        yield publish
    finally:
        c.disconnect()
        c.loop_stop()


@contextmanager
def listener(mqtt_url: str, client_id: str, topic_filter: str) -> Iterator[list[bytes]]:
    """Collect payloads published on ``topic_filter`` while the block runs."""
    got: list[bytes] = []
    ready = threading.Event()
    c = _client(mqtt_url, client_id)
    c.on_message = lambda cl, ud, msg: got.append(bytes(msg.payload))
    c.on_subscribe = lambda *a: ready.set()
    c.loop_start()
    c.subscribe(topic_filter, qos=1)
    assert ready.wait(5), "subscription not confirmed"
    try:
        yield got
    finally:
        c.disconnect()
        c.loop_stop()


def forget_session(mqtt_url: str, client_id: str, protocol: str = "5") -> None:
    """End a persistent session so the broker stops queueing messages for it."""
    c = _client(mqtt_url, client_id, protocol=protocol, clean=True)
    c.loop_start()
    time.sleep(0.05)
    c.disconnect()
    c.loop_stop()


class LocalPostgres:
    """A throwaway PostgreSQL 15 cluster (initdb/pg_ctl as user postgres) on a free port, restartable.

    Fault tests restart *this* server, never the shared one. fsync is off: the
    tests kill the server, not the operating system, so the WAL in the page cache survives.
    """

    BIN = "/usr/lib/postgresql/15/bin"

    def __init__(self) -> None:
        import shutil
        import subprocess
        import tempfile

        from ingest.localbroker import free_port

        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fw-pg-")
        shutil.chown(self.dir, "postgres")
        self._run = lambda *args: subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60
        )
        self._run(f"{self.BIN}/initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c fsync=off"
        self._run(f"{self.BIN}/pg_ctl", "-D", f"{self.dir}/data", "-o", opts, "-l", f"{self.dir}/log", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(f"{self.BIN}/pg_ctl", "-D", f"{self.dir}/data", "-m", mode, "-w", "stop")

    def close(self) -> None:
        import shutil
        import subprocess

        pg_ctl = [f"{self.BIN}/pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "stop"]
        subprocess.run(["runuser", "-u", "postgres", "--", *pg_ctl], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class ResendingPublisher:
    """Publishes batches at QoS 1 and, like the gateway's buffer, resends any batch the broker did not PUBACK.

    Survives broker restarts (paho reconnects); at-least-once, so the database's
    (series_id, time) key is what keeps counts exact.
    """

    def __init__(self, mqtt_url: str, client_id: str) -> None:
        self._c = _client(mqtt_url, client_id)
        self._c.reconnect_delay_set(0.1, 1)
        self._c.loop_start()
        self.resends = 0

    def publish(self, topic_name: str, batch: Batch, timeout: float = 20.0) -> None:
        data = encode_batch(batch)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self._c.publish(topic_name, data, qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                try:
                    info.wait_for_publish(2)
                    if info.is_published():
                        return
                except (RuntimeError, ValueError):  # the connection dropped while waiting
                    pass
            else:  # not connected right now: paho will reconnect
                time.sleep(0.1)
            self.resends += 1
        raise AssertionError(f"batch {batch.seq} never acknowledged by the broker")

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()
