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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fwcore.contract import encode_status, topic
from fwcore.settings import mqtt_parts
from fwcore.tls import TlsFiles
from gateway.broker_tls import ConnectFailures, use_tls

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


class Publisher(Protocol):
    """What the gateway needs of its broker connection: :class:`MqttPublisher`, or in Sparkplug B
    mode :class:`gateway.sparkplug.SparkplugNode`, which keeps the same surface."""

    client: mqtt.Client

    def start(self) -> None: ...

    def publish(self, topic_name: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo: ...

    async def stop(self, reason: str = "shutdown", timeout: float = 2.0) -> None: ...


class MqttPublisher:
    """One broker connection for one gateway (client id ``fw-gw-{site}-{gateway}``)."""

    def __init__(
        self,
        url: str,
        site: str,
        gateway: str,
        callbacks: PublisherCallbacks,
        *,
        protocol: str = "5",
        loop: asyncio.AbstractEventLoop | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: CA and client certificate for an ``mqtts://`` URL (:mod:`gateway.broker_tls`)."""
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"mqtt protocol must be '5' or '3.1.1', not {protocol!r}")
        self.site = site
        self.gateway = gateway
        self.client_id = f"fw-gw-{site}-{gateway}"
        self.protocol = protocol
        self.status_topic = topic(site, gateway, "status")
        self.ack_topic = topic(site, gateway, "ack")
        self._parts = mqtt_parts(url)
        self._cb = callbacks
        self._loop = loop or asyncio.get_running_loop()
        self._started = False
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
        self.client.will_set(
            self.status_topic,
            encode_status("offline", gateway=gateway, ts=now_ms(), reason="connection lost"),
            qos=1,
            retain=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

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
            encode_status("online", gateway=self.gateway, ts=now_ms(), reason="connected"),
            qos=1,
            retain=True,
        )
        self._loop.call_soon_threadsafe(self._cb.on_connected)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        self._loop.call_soon_threadsafe(self._cb.on_disconnected, str(reason))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.ack_topic:
            self._loop.call_soon_threadsafe(self._cb.on_ack, bytes(message.payload))

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
            self.client.connect_async(host, port, KEEPALIVE_SECONDS, clean_start=False, properties=props)
        else:
            self.client.connect_async(host, port, KEEPALIVE_SECONDS)
        self.client.loop_start()

    def publish(self, topic_name: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1."""
        return self.client.publish(topic_name, payload, qos=1, retain=retain)

    async def stop(self, reason: str = "shutdown", timeout: float = 2.0) -> None:
        """Publish the retained ``offline`` status, disconnect cleanly (no Will) and stop the thread."""
        if not self._started:
            return
        self._started = False
        if self.client.is_connected():
            info = self.publish(
                self.status_topic,
                encode_status("offline", gateway=self.gateway, ts=now_ms(), reason=reason),
                retain=True,
            )
            try:
                await asyncio.to_thread(info.wait_for_publish, timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline status not confirmed by broker: %s", exc)
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
