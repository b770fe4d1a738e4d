"""MQTT clients for tests on the real broker: publish, listen, watch, forget sessions, clean up.

Every client id should carry the test's ``uid``: the broker is shared and keeps persistent
sessions across tests. Nothing here sleeps to let the broker catch up; each step waits for
the acknowledgement (CONNACK, SUBACK, PUBACK) or the message it needs.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fwcore.contract import Batch, decode_batch, encode_batch
from fwcore.settings import DEFAULT_MQTT_URL, mqtt_parts
from tests.support.names import TEST_STATUS_TOPIC
from tests.support.waits import wait_until, wait_until_async

#: The shared broker every test uses (never stopped or reconfigured by a test).
MQTT_URL = os.environ.get("FIELDWATCH_MQTT_URL", DEFAULT_MQTT_URL)

Match = Callable[[str, bytes, bool], bool]


class BrokerUnreachable(RuntimeError):
    """The shared broker does not accept connections; the message says how to start it."""


def reachable_broker(url: str = MQTT_URL) -> str:
    """``url`` when its broker accepts TCP connections, else :class:`BrokerUnreachable` with advice."""
    parts = mqtt_parts(url)
    try:
        with socket.create_connection((parts["host"], parts["port"]), timeout=3):
            pass
    except OSError as exc:
        raise BrokerUnreachable(
            f"MQTT broker at {url} is not reachable ({exc}). Start Mosquitto: "
            "`mkdir -p /run/mosquitto && chown mosquitto /run/mosquitto && "
            "mosquitto -d -c /etc/mosquitto/mosquitto.conf`, or set FIELDWATCH_MQTT_URL."
        ) from exc
    return url


def client(mqtt_url: str, client_id: str, *, protocol: str = "5", clean: bool = True) -> mqtt.Client:
    """A paho client connected (CONNECT sent; start its loop to complete it) to ``mqtt_url``."""
    p = mqtt_parts(mqtt_url)
    if protocol == "5":
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if p["username"]:
            c.username_pw_set(p["username"], p["password"])
        c.connect(p["host"], p["port"], 30, clean_start=clean)
    else:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean)
        if p["username"]:
            c.username_pw_set(p["username"], p["password"])
        c.connect(p["host"], p["port"], 30)
    return c


@contextmanager
def publisher(mqtt_url: str, client_id: str) -> Iterator[Callable[..., None]]:
    """A connected client; yields ``publish(topic, payload, retain=False)`` that waits for the PUBACK."""
    c = client(mqtt_url, client_id)
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
    """Collect payloads published on ``topic_filter`` while the block runs (subscribed on entry)."""
    got: list[bytes] = []
    ready = threading.Event()
    c = client(mqtt_url, client_id)
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
    """End a persistent session so the broker stops queueing messages for it.

    Connecting with a clean start discards the session once the broker answers the CONNECT.
    """
    c = client(mqtt_url, client_id, protocol=protocol, clean=True)
    c.loop_start()
    try:
        wait_until(c.is_connected, 5, what=f"the broker to accept {client_id}'s clean CONNECT", interval=0.01)
    finally:
        c.disconnect()
        c.loop_stop()


class ResendingPublisher:
    """Publishes batches at QoS 1 and, like the gateway's buffer, resends any batch the broker did not PUBACK.

    Survives broker restarts (paho reconnects); at-least-once, so the database's
    (series_id, time) key is what keeps counts exact.
    """

    def __init__(self, mqtt_url: str, client_id: str) -> None:
        self._c = client(mqtt_url, client_id)
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
            else:  # not connected right now: paho reconnects; resend once it has
                wait_until(
                    self._c.is_connected,
                    max(0.0, deadline - time.monotonic()),
                    what=f"the publisher to reconnect to resend batch {batch.seq}",
                    interval=0.02,
                )
            self.resends += 1
        raise AssertionError(f"batch {batch.seq} never acknowledged by the broker")

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


class Watcher:
    """A plain paho subscriber that queues (topic, payload, retain) for the test to match against."""

    def __init__(self, filter_: str, url: str = MQTT_URL) -> None:
        self.filter = filter_
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), bool(m.retain)))
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        parts = mqtt_parts(url)
        self.client.connect(parts["host"], parts["port"])
        self.client.subscribe(filter_, qos=1)
        self.client.loop_start()

    async def next(self, match: Match, timeout: float = 5.0) -> tuple[str, bytes, bool]:
        """The next queued message that ``match``es (earlier non-matching ones are dropped)."""
        skipped: list[str] = []

        def found() -> tuple[str, bytes, bool] | None:
            while True:
                try:
                    msg = self.messages.get_nowait()
                except queue.Empty:
                    return None
                if match(*msg):
                    return msg
                skipped.append(msg[0])

        return await wait_until_async(
            found,
            timeout,
            what=f"a matching message on {self.filter}",
            observe=lambda: f"{len(skipped)} non-matching: {skipped[-5:]}",
            interval=0.02,
        )

    async def batches(self, n: int, timeout: float = 5.0) -> list[Batch]:
        """The next ``n`` telemetry batches, decoded (``timeout`` for each)."""
        out = []
        for _ in range(n):
            _, payload, _ = await self.next(lambda t, p, r: t.endswith("/telemetry"), timeout)
            out.append(decode_batch(payload))
        return out

    async def wait_subscribed(self, timeout: float = 5.0) -> None:
        """Return once the broker has confirmed the subscription (SUBACK): later messages will be seen."""
        await wait_until_async(self.subscribed.is_set, timeout, what=f"the SUBACK for {self.filter}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def clear_test_retained(url: str = MQTT_URL, older_than_s: float = 1800.0) -> None:
    """Clear retained gateway statuses that test gateways left on the shared broker.

    Test gateways publish retained birth/death messages; left on a shared broker they would
    be dead-lettered as "unknown_gateway" by every later worker that subscribes to all sites
    (the demo on a real broker, say). Only topics whose site slug has the tests' shape are
    cleared, and only statuses stamped more than ``older_than_s`` ago: other test runs share the
    broker, and clearing the status of a gateway one of them is running would break that test.
    Mosquitto queues a subscription's retained messages before the SUBACK and answers a client
    in order, so a marker published to ourselves after the SUBACK arrives after all of them.
    """
    parts = mqtt_parts(url)
    tag = uuid.uuid4().hex[:6]
    marker = f"fw-test-cleaner/{tag}"
    topics: set[str] = set()
    done = threading.Event()

    cutoff_ms = (time.time() - older_than_s) * 1000

    def stale(payload: bytes) -> bool:
        try:
            return float(orjson.loads(payload)["ts"]) < cutoff_ms
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return True  # not a status we can date: litter

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        if m.topic == marker:
            done.set()
        elif m.retain and TEST_STATUS_TOPIC.match(m.topic) and stale(bytes(m.payload)):
            topics.add(m.topic)

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fw-test-cleaner-{tag}")
    if parts["username"]:
        c.username_pw_set(parts["username"], parts["password"])
    c.on_message = on_message
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    try:
        c.connect(parts["host"], parts["port"])
    except OSError:
        return  # no broker: the mqtt_url fixture reports that where a test needs one
    c.loop_start()
    try:
        c.subscribe([("fw/v1/+/+/status", 0), (marker, 0)])
        wait_until(subscribed.is_set, 5, what="the SUBACK for the retained-status cleaner")
        c.publish(marker, b"", qos=0)
        wait_until(done.is_set, 5, what="the retained statuses (then the cleaner's marker) to arrive")
        for t in topics:
            c.publish(t, b"", qos=1, retain=True).wait_for_publish(2)
    finally:
        c.loop_stop()
        c.disconnect()
