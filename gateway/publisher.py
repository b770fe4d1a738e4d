"""MQTT side of the gateway: a paho-mqtt v2 client with birth, Last Will and ack subscription.

paho runs its network loop in its own thread (``loop_start``). Nothing here
touches asyncio state from that thread: every callback is handed to the event
loop with ``loop.call_soon_threadsafe``. ``publish`` is safe to call from the
loop thread (paho locks internally).

Session: fixed client id, MQTT 5 ``clean_start=False`` with a session expiry, or
MQTT 3.1.1 ``clean_session=False``, so QoS 1 messages in flight survive a
reconnect. Status: a retained ``online`` birth after every connect, a retained
``offline`` Last Will for unclean deaths, and a retained ``offline`` with reason
``shutdown`` on a clean stop.

Birth and death are ordered by **status session**, not by their timestamps (like
Sparkplug's ``bdSeq``): every MQTT connection takes a new session number, persisted
in ``{state_dir}/session-{site}-{gateway}.json`` before it is used, and the Will armed
for that connection and the birth sent on it carry the same number. The Will must be
composed before connecting, so its ``ts`` is older than the birth's; ingest therefore
compares sessions: a death of the current session wins over its birth, a Will of an
earlier connection delivered late (after a reconnect) never wins over a newer birth.
The number is the connection's start time in epoch milliseconds, or the previous
session + 1 if the clock went back, so it grows even if the state directory is lost::

    connect #1 (Will: offline, session s1) -> birth online s1 -> statuses s1 ...
    connection lost: Will(s1) published by the broker; next Will armed with s2 > s1
    connect #2 (Will: offline, session s2) -> birth online s2    (a late Will(s1) is stale)

Deliveries: :meth:`MqttPublisher.publish_tracked` returns a :class:`Sent` whose
``published`` turns true when the broker's PUBACK arrives (paho's ``on_publish``).
paho's own ``MQTTMessageInfo`` cannot say so for a message published while its
socket was gone: paho keeps such a message and sends it after reconnecting, but
its ``rc`` stays "not connected" and ``is_published()`` raises ``RuntimeError``
forever, even once the broker has acknowledged it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fwcore.contract import encode_status, topic
from fwcore.settings import mqtt_parts
from fwcore.tls import TlsFiles
from gateway.broker_tls import ConnectFailures, use_tls
from gateway.config import mqtt_client_id
from gateway.sequence import SequenceStore

log = logging.getLogger(__name__)

SESSION_EXPIRY_SECONDS = 3600
KEEPALIVE_SECONDS = 30
#: Messages paho may hold in memory (in flight + queued); ~2,000-point batches make this <= ~60 MB.
MAX_QUEUED_MESSAGES = 256


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class PublisherCallbacks:
    """What the owner wants to hear about, always called on the owner's event loop."""

    on_connected: Callable[[], None]
    on_disconnected: Callable[[str], None]
    on_ack: Callable[[bytes], None]


@dataclass(slots=True)
class Sent:
    """One QoS 1 publish, as the forwarder needs to know it (:class:`gateway.forward.Delivery`).

    ``rc`` is paho's answer when the message was handed over: ``MQTT_ERR_SUCCESS``,
    ``MQTT_ERR_NO_CONN`` (the socket was gone: paho keeps the message and sends it after
    reconnecting) or ``MQTT_ERR_QUEUE_SIZE`` (refused: paho did not keep it). ``published``
    turns true when the broker acknowledges it, whatever ``rc`` was.
    """

    mid: int
    rc: int
    published: bool = False

    def is_published(self) -> bool:
        return self.published


class Publisher(Protocol):
    """What the gateway needs of its broker connection: :class:`MqttPublisher`, or in Sparkplug B
    mode :class:`gateway.sparkplug.SparkplugNode`, which keeps the same surface."""

    client: mqtt.Client

    def start(self) -> None: ...

    def publish(self, topic_name: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo: ...

    async def stop(self, reason: str = "shutdown", timeout: float = 2.0) -> None: ...


class MqttPublisher:
    """One broker connection for one gateway (client id: its login, see :func:`gateway.config.mqtt_client_id`).

    ``state_dir``: where the status session number is persisted (without one, as in tests of
    this class alone, it lives in memory and starts from the clock).
    """

    def __init__(
        self,
        url: str,
        site: str,
        gateway: str,
        callbacks: PublisherCallbacks,
        *,
        protocol: str = "5",
        loop: asyncio.AbstractEventLoop | None = None,
        state_dir: Path | None = None,
        keepalive: int = KEEPALIVE_SECONDS,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: CA and client certificate for an ``mqtts://`` URL (:mod:`gateway.broker_tls`)."""
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"mqtt protocol must be '5' or '3.1.1', not {protocol!r}")
        self.site = site
        self.gateway = gateway
        self._parts = mqtt_parts(url)
        self.client_id = mqtt_client_id(site, gateway, self._parts["username"])
        self.protocol = protocol
        self.status_topic = topic(site, gateway, "status")
        self.ack_topic = topic(site, gateway, "ack")
        self._cb = callbacks
        self._loop = loop or asyncio.get_running_loop()
        self._started = False
        self.keepalive = keepalive
        self._sessions = None if state_dir is None else SequenceStore(state_dir, site, gateway, name="session")
        #: The status session of the current (or, while disconnected, the next) connection.
        self.session = 0
        #: Publishes waiting for their PUBACK, by message id (touched on the event loop only).
        self._unconfirmed: dict[int, Sent] = {}
        v5 = protocol == "5"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
        )
        if self._parts["username"]:
            self.client.username_pw_set(self._parts["username"], self._parts["password"])
        use_tls(self.client, url, tls)
        self.connect_failures = ConnectFailures(self._parts["host"], self._parts["port"])
        self.client.on_connect_fail = self.connect_failures
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Bound paho's in-memory queue: unbounded, a gateway producing faster than the broker takes
        # grew to hundreds of MB. A refused batch stays on disk and is replayed (gateway.forward).
        self.client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        self._arm_will()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    # --- status session and the Will (construction, then the paho thread) ------------
    def _arm_will(self) -> None:
        """Take the next session (persisted first) and put it in the Will of the next CONNECT."""
        floor = now_ms()
        self.session = self._sessions.next(floor) if self._sessions is not None else max(self.session + 1, floor)
        self.client.will_set(
            self.status_topic,
            encode_status("offline", gateway=self.gateway, ts=now_ms(), reason="connection lost", session=self.session),
            qos=1,
            retain=True,
        )

    # --- paho thread -> event loop -------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused connection: %s", reason)
            return
        self.connect_failures.connected()
        # Birth and ack subscription first, from this thread, so they precede any republish.
        client.subscribe(self.ack_topic, qos=1)
        client.publish(
            self.status_topic,
            encode_status("online", gateway=self.gateway, ts=now_ms(), reason="connected", session=self.session),
            qos=1,
            retain=True,
        )
        self._loop.call_soon_threadsafe(self._cb.on_connected)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self._started:  # paho reconnects after this callback returns: the next connection is a new session
            self._arm_will()
        self._loop.call_soon_threadsafe(self._cb.on_disconnected, str(reason))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.ack_topic:
            self._loop.call_soon_threadsafe(self._cb.on_ack, bytes(message.payload))

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        # paho holds its message lock here: hop to the loop rather than take a lock of ours.
        self._loop.call_soon_threadsafe(self._confirmed, mid, reason)

    def _confirmed(self, mid: int, reason: object) -> None:
        sent = self._unconfirmed.pop(mid, None)
        if sent is None:  # a status or health message, not tracked
            return
        if getattr(reason, "is_failure", False):  # MQTT 5: the broker answered but did not take it
            log.warning("broker refused a telemetry message (%s); it is resent from disk after ack_timeout", reason)
        # Acknowledged either way: the broker answered, so paho will not send it again; any resend is ours.
        sent.published = True

    # --- owner API (event loop thread) ----------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting until :meth:`stop`."""
        if self._started:
            return
        self._started = True
        host, port = self._parts["host"], self._parts["port"]
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
            self.client.connect_async(host, port, self.keepalive, clean_start=False, properties=props)
        else:
            self.client.connect_async(host, port, self.keepalive)
        self.client.loop_start()

    def publish(self, topic_name: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1."""
        return self.client.publish(topic_name, payload, qos=1, retain=retain)

    def publish_tracked(self, topic_name: str, payload: bytes) -> Sent:
        """Publish at QoS 1 and follow the PUBACK (call on the event loop, as :class:`Sent` is updated there)."""
        info = self.client.publish(topic_name, payload, qos=1)
        sent = Sent(info.mid, info.rc)
        if info.rc != mqtt.MQTT_ERR_QUEUE_SIZE:  # refused messages are not kept by paho: no PUBACK will come
            # Its PUBACK is handled on this loop after this call returns, so it cannot be missed.
            self._unconfirmed[info.mid] = sent
        return sent

    async def stop(self, reason: str = "shutdown", timeout: float = 2.0) -> None:
        """Publish the retained ``offline`` status, disconnect cleanly (no Will) and stop the thread."""
        if not self._started:
            return
        self._started = False
        if self.client.is_connected():
            info = self.publish(
                self.status_topic,
                encode_status("offline", gateway=self.gateway, ts=now_ms(), reason=reason, session=self.session),
                retain=True,
            )
            try:
                await asyncio.to_thread(info.wait_for_publish, timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline status not confirmed by broker: %s", exc)
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
