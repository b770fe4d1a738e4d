"""The MQTT side of ingest: a persistent QoS 1 session whose PUBACKs we send ourselves.

paho's network thread only wraps each message in an :class:`Inbound` and hands
it to a sink (the worker's bounded queue). Nothing is acknowledged on receipt:
:meth:`MqttConsumer.ack` sends the PUBACK later, after the message is committed,
and only if it arrived on the *current* connection. Message ids are per
connection; after a reconnect the broker redelivers whatever we had not acked,
and acking an old id could acknowledge some other message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fwcore.settings import mqtt_parts
from fwcore.tls import TlsFiles, explain_handshake_failure, mqtt_tls_context
from ingest.errors import BrokerUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message, stamped with the connection it came on."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    retained: bool = False


class MqttConsumer:
    """A paho client with a persistent session, fixed client id and manual acks.

    ``tls``: the CA (and client certificate) for an ``mqtts://`` URL; a file that cannot be used
    raises :class:`fwcore.tls.TlsConfigError` here, before any connection.
    """

    def __init__(
        self,
        mqtt_url: str,
        *,
        client_id: str,
        protocol: str,
        subscriptions: list[str],
        sink: Callable[[Inbound], None],
        session_expiry_s: int = 3600,
        receive_maximum: int = 1000,
        keepalive: int = 30,
        tls: TlsFiles | None = None,
    ) -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f'MQTT protocol must be "5" or "3.1.1", not {protocol!r}')
        self._parts = mqtt_parts(mqtt_url)
        # Errors name host:port, never the URL: it may carry the password.
        self._where = f"{self._parts['host']}:{self._parts['port']}"
        tls_context = mqtt_tls_context(mqtt_url, tls)
        self._v5 = protocol == "5"
        self._subscriptions = subscriptions
        self._sink = sink
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = max(1, min(receive_maximum, 65535))
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._connected_since: float | None = None
        self._paused = False
        self._subscribed = threading.Event()
        self._connect_error: str | None = None
        if self._v5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        if self._parts["username"]:
            client.username_pw_set(self._parts["username"], self._parts["password"])
        if tls_context is not None:
            client.tls_set_context(tls_context)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    @property
    def generation(self) -> int:
        """Counts successful connections; messages remember the one they arrived on."""
        return self._generation

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def connected_since(self) -> float | None:
        """``time.monotonic()`` when the current connection was confirmed; None while disconnected."""
        return self._connected_since

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe and wait for the broker to confirm; paho reconnects on its own afterwards."""
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._session_expiry_s
            # Unacked messages count against this, so the broker never sends more than we hold.
            props.ReceiveMaximum = self._receive_maximum
        try:
            if self._v5:
                self._client.connect(
                    self._parts["host"], self._parts["port"], self._keepalive, clean_start=False, properties=props
                )
            else:
                self._client.connect(self._parts["host"], self._parts["port"], self._keepalive)
        except OSError as exc:
            why = explain_handshake_failure(
                exc, self._parts["host"], self._parts["port"], ca_hint="FIELDWATCH_MQTT_CA_FILE"
            )
            raise BrokerUnavailable(
                why
                or f"MQTT broker at {self._where} is not reachable: {exc.strerror or exc} — start Mosquitto "
                "(`systemctl start mosquitto`) or fix FIELDWATCH_MQTT_URL"
            ) from exc
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self._client.loop_stop()
            why = self._connect_error or "no CONNACK/SUBACK in time"
            raise BrokerUnavailable(f"MQTT broker at {self._where} did not accept the subscription: {why}")

    def pause(self) -> None:
        """Stop taking new messages; those arriving now stay unacked and are redelivered later."""
        self._paused = True

    def ack(self, msg: Inbound) -> bool:
        """Send the PUBACK for ``msg`` if it came on this connection; False if the broker will redeliver it."""
        if msg.qos == 0:
            return True
        with self._lock:
            if msg.generation != self._generation or not self._connected:
                return False
            rc = self._client.ack(msg.mid, msg.qos)
        return rc == mqtt.MQTT_ERR_SUCCESS

    def publish(self, topic_name: str, payload: bytes, qos: int = 1) -> bool:
        """Queue a publish; False when the client cannot take it right now."""
        info = self._client.publish(topic_name, payload, qos=qos)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self) -> None:
        """Disconnect (sending queued PUBACKs first) and stop the network thread. Safe twice."""
        self._paused = True
        try:
            self._client.disconnect()
        except Exception:  # already gone: nothing left to tell the broker
            log.debug("disconnect failed", exc_info=True)
        self._client.loop_stop()
        self._connected = False
        self._connected_since = None

    # paho callbacks (network thread) -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connect_error = str(reason_code)
            log.error("MQTT broker refused the connection: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
            self._connected = True
            self._connected_since = time.monotonic()
        log.info(
            "connected to MQTT broker (session present: %s, connection %d)", flags.session_present, self._generation
        )
        # Subscribing again is harmless and repairs a session the broker expired.
        client.subscribe([(s, 1) for s in self._subscriptions])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes, properties) -> None:
        bad = [rc for rc in reason_codes if rc.is_failure]
        if bad:
            self._connect_error = f"subscription refused: {bad}"
            log.error("MQTT broker refused a subscription: %s", bad)
            return
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags, reason_code, properties) -> None:
        with self._lock:
            self._connected = False
            self._connected_since = None
        if not self._paused:
            log.warning("disconnected from MQTT broker (%s); paho will reconnect", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if self._paused:
            return
        self._sink(
            Inbound(
                topic=message.topic,
                payload=bytes(message.payload),
                mid=message.mid,
                qos=message.qos,
                generation=self._generation,
                retained=bool(message.retain),
            )
        )
