"""Sparkplug B edge-node mode: the gateway's broker connection when ``sparkplug:`` is configured.

:class:`SparkplugNode` replaces :class:`gateway.publisher.MqttPublisher` (same
``start``/``publish``/``stop``/``client`` surface, so the agent's health loop keeps
working). What it sends is decided by the pure
:class:`gateway.sparkplug_session.SparkplugSession`; the bytes are written by
:mod:`gateway.sparkplug_proto`. This module is the I/O around them:

- **bdSeq**: a counter persisted in ``{state_dir}/sparkplug-bdseq-{site}-{gateway}.json``
  (written before use, like the telemetry seq), incremented for every connection;
  the value mod 256 goes into the Will (NDEATH) before the CONNECT and into that
  connection's NBIRTH. paho reconnects by itself, so the next Will is set as soon
  as a connection drops.
- **MQTT session**: clean start / clean session (Sparkplug requires it for edge
  nodes); NCMD is subscribed on every connect, before NBIRTH.
- **Rebirth**: an NCMD with ``Node Control/Rebirth`` = true re-sends NBIRTH and
  every DBIRTH (same bdSeq, seq from 0).
- **Store-and-forward**: while there is no connection (no NBIRTH), each publish
  interval's points are written to ``{state_dir}/sparkplug-buffer-{site}-{gateway}.sqlite``
  (the same :class:`gateway.buffer.DiskBuffer`, bounds and fsync policy as fieldwatch
  mode). After the next births (once every device has its DBIRTH, or after
  :data:`REPLAY_WAIT` seconds) they are replayed oldest first at ``buffer.replay_rate``
  batches per second as DDATA whose metrics are flagged ``is_historical``; points of a
  device still offline then are dropped, logged and counted (``points_superseded``). Sparkplug
  data messages are QoS 0 and hosts send no acks, so a replayed batch leaves the disk
  once paho has taken it on a live connection: at-most-once from there.
- **Clean stop**: NDEATH (QoS 1) is published before disconnecting, since a clean
  disconnect does not fire the Will.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fwcore.contract import Batch, Point, decode_batch, encode_batch
from fwcore.settings import mqtt_parts
from fwcore.tls import TlsFiles
from gateway.broker_tls import ConnectFailures, use_tls
from gateway.buffer import DiskBuffer
from gateway.config import GatewayConfig, mqtt_client_id
from gateway.publisher import KEEPALIVE_SECONDS, PublisherCallbacks
from gateway.sequence import SequenceStore
from gateway.sparkplug_proto import WireError, decode_payload
from gateway.sparkplug_session import Message, SparkplugSession, metric_defs

log = logging.getLogger(__name__)


#: Seconds after a birth the backlog waits for every device's DBIRTH before replaying anyway.
REPLAY_WAIT = 10.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class SparkplugStats:
    """Counters a test or the health payload can read."""

    births: int = 0  # NBIRTHs sent (connects + rebirths)
    rebirths: int = 0  # rebirth requests honoured
    messages: int = 0  # NBIRTH/DBIRTH/DDATA/DDEATH handed to paho
    publish_errors: int = 0  # paho refused a data message (connection just dropped): its points are lost
    points_buffered: int = 0  # points written to disk while there was no connection
    points_replayed: int = 0  # of those, sent later as historical DDATA
    points_superseded: int = 0  # points of a device without a DBIRTH (offline; its DDEATH stands for them)


class SparkplugNode:
    """One Sparkplug B edge node on one broker connection (client id: its login, as :class:`MqttPublisher`)."""

    def __init__(
        self,
        config: GatewayConfig,
        state_dir: str | Path,
        url: str,
        callbacks: PublisherCallbacks,
        *,
        protocol: str = "5",
        clock: Callable[[], int] = now_ms,
        tls: TlsFiles | None = None,
    ) -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"mqtt protocol must be '5' or '3.1.1', not {protocol!r}")
        sp = config.sparkplug
        assert sp is not None
        self.session = SparkplugSession(
            sp.group_id or config.site, sp.edge_node_id or config.gateway, metric_defs(config.devices)
        )
        self.site, self.gateway = config.site, config.gateway
        self.client_id = mqtt_client_id(config.site, config.gateway, mqtt_parts(url)["username"])
        self.stats = SparkplugStats()
        self._cb = callbacks
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._replay_rate = config.buffer.replay_rate
        state_dir = Path(state_dir)
        self._bdseq_store = SequenceStore(state_dir, config.site, config.gateway)
        self._bdseq_store.path = state_dir / f"sparkplug-bdseq-{config.site}-{config.gateway}.json"
        b = config.buffer
        self.buffer = DiskBuffer(
            state_dir / f"sparkplug-buffer-{config.site}-{config.gateway}.sqlite",
            max_bytes=b.max_bytes,
            max_age=b.max_age,
            sync=b.sync,
        )
        self._buffer_seq = self.buffer.max_seq()
        self._parts = mqtt_parts(url)
        self.protocol = protocol
        v5 = protocol == "5"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        if self._parts["username"]:
            self.client.username_pw_set(self._parts["username"], self._parts["password"])
        use_tls(self.client, url, tls)
        self.connect_failures = ConnectFailures(self._parts["host"], self._parts["port"])
        self.client.on_connect_fail = self.connect_failures
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.ncmd_topic = self.session.topic("NCMD")
        self._bdseq = 0  # the bdSeq in the Will of the current (or next) connection
        self._started = False
        self._replay_task: asyncio.Task[None] | None = None
        self._born_at = 0.0

    # --- bdSeq and the Will (paho thread or loop; no session state touched) ------------
    def _arm_will(self) -> None:
        """Take the next bdSeq (persisted first) and put it in the Will for the next CONNECT."""
        self._bdseq = self._bdseq_store.next() % 256
        death = self.session.death_payload(self._bdseq, self._clock())
        self.client.will_set(self.session.topic("NDEATH"), death, qos=1, retain=False)

    # --- paho thread -> event loop -------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused the Sparkplug connection: %s", reason)
            return
        self.connect_failures.connected()
        client.subscribe(self.ncmd_topic, qos=0)  # before NBIRTH, so a rebirth request is never missed
        self._loop.call_soon_threadsafe(self._born, self._bdseq)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self._started:
            self._arm_will()  # before paho's reconnect: the next connection has the next bdSeq
        self._loop.call_soon_threadsafe(self._lost, str(reason))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.ncmd_topic:
            self._loop.call_soon_threadsafe(self._on_command, bytes(message.payload))

    # --- event loop ------------------------------------------------------------------
    def _send(self, msgs: Iterable[Message]) -> bool:
        ok = True
        for msg in msgs:
            info = self.client.publish(msg.topic, msg.payload, qos=msg.qos)
            if info.rc:
                ok = False
                self.stats.publish_errors += 1
            else:
                self.stats.messages += 1
        return ok

    def _born(self, bdseq: int) -> None:
        if not self._started:
            return
        self._send(self.session.birth(bdseq, self._clock()))
        self.stats.births += 1
        self._born_at = time.monotonic()
        log.info(
            "Sparkplug NBIRTH on %s (bdSeq %d); %d buffered batches to replay",
            self.session.topic("NBIRTH"),
            bdseq,
            self.buffer.depth,
        )
        self._cb.on_connected()

    def _lost(self, reason: str) -> None:
        self.session.lost()
        self._cb.on_disconnected(reason)

    def _on_command(self, raw: bytes) -> None:
        try:
            payload = decode_payload(raw)
        except WireError as exc:
            log.warning("ignoring a malformed NCMD on %s: %s", self.ncmd_topic, exc)
            return
        if not self.session.is_rebirth_request(payload):
            names = ", ".join(repr(m.name or m.alias) for m in payload.metrics) or "no metrics"
            log.warning("ignoring an NCMD the gateway does not support (%s); only '%s' is", names, "Rebirth")
            return
        if self.session.born and self.client.is_connected():
            self.stats.rebirths += 1
            log.info("Sparkplug rebirth requested: sending NBIRTH and every DBIRTH again")
            self._send(self.session.birth(self.session.bdseq, self._clock()))
            self.stats.births += 1

    # --- owner API (event loop thread) ------------------------------------------------
    def start(self) -> None:
        """Connect in the background (Will armed with the next bdSeq); paho reconnects until :meth:`stop`."""
        if self._started:
            return
        self._started = True
        self._arm_will()
        host, port = self._parts["host"], self._parts["port"]
        if self.protocol == "5":
            self.client.connect_async(host, port, KEEPALIVE_SECONDS, clean_start=True)
        else:
            self.client.connect_async(host, port, KEEPALIVE_SECONDS)
        self.client.loop_start()
        self._replay_task = asyncio.create_task(self._replay_loop(), name="sparkplug-replay")

    def publish(self, topic_name: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """A plain QoS 1 publish (for the agent's non-Sparkplug topics, e.g. health)."""
        return self.client.publish(topic_name, payload, qos=1, retain=retain)

    def set_device_online(self, device: str, online: bool) -> None:
        """DDEATH when a born device stops answering; its DBIRTH follows its next data."""
        self._send(self.session.set_online(device, online, self._clock()))

    def publish_points(self, points: list[Point]) -> int:
        """Send one publish interval's points (DBIRTH/DDATA), or put them on disk while unconnected.

        Returns the points sent now.
        """
        if not points:
            return 0
        if not (self.session.born and self.client.is_connected()):
            self._store(points)
            return 0
        msgs, carried = self.session.data(points, self._clock())
        self.stats.points_superseded = self.session.points_superseded
        if not self._send(msgs):
            log.warning("the broker connection dropped while publishing; %d points of this interval lost", carried)
            return 0
        return carried

    def _store(self, points: list[Point]) -> None:
        self._buffer_seq += 1
        batch = Batch(self.gateway, self.site, self._buffer_seq, points, sent_at=self._clock())
        dropped = self.buffer.put_many([(batch.seq, len(points), encode_batch(batch))])
        self.stats.points_buffered += len(points)
        if dropped:
            log.warning("Sparkplug disk buffer full: dropped %d oldest batches", len(dropped))

    async def _replay_loop(self) -> None:
        """Replay the disk backlog as historical DDATA, at most ``replay_rate`` batches per second."""
        period = 1.0 / self._replay_rate
        next_expire = 0.0
        while True:
            await asyncio.sleep(period)
            if time.monotonic() >= next_expire:
                next_expire = time.monotonic() + 1.0
                self.buffer.expire()
            if not (self.buffer.depth and self.session.born and self.client.is_connected()):
                continue
            if not self.session.all_devices_born and time.monotonic() - self._born_at < REPLAY_WAIT:
                continue  # give devices time for their first poll: a backlog point needs its device's DBIRTH
            seq = self.buffer.seqs()[0]
            stored = self.buffer.get(seq)
            if stored is None:
                continue
            try:
                points = decode_batch(stored.payload).points
            except ValueError as exc:  # cannot happen for what _store wrote; never loop on it
                log.error("dropping an unreadable Sparkplug backlog batch %d: %s", seq, exc)
                self.buffer.ack([seq])
                continue
            before = self.session.points_superseded
            msgs, carried = self.session.data(points, self._clock(), historical=True)
            if self._send(msgs):
                self.buffer.ack([seq])
                self.stats.points_replayed += carried
                skipped = self.session.points_superseded - before
                self.stats.points_superseded = self.session.points_superseded
                if skipped:
                    log.warning("backlog batch %d: %d points of now-offline devices were not sent", seq, skipped)

    async def stop(self, reason: str = "shutdown", timeout: float = 2.0) -> None:
        """Publish NDEATH (a clean disconnect fires no Will), disconnect and stop. Safe twice."""
        if not self._started:
            return
        self._started = False
        if self._replay_task is not None:
            self._replay_task.cancel()
            await asyncio.gather(self._replay_task, return_exceptions=True)
        if self.client.is_connected():
            death = self.session.death_payload(self._bdseq, self._clock())
            info = self.client.publish(self.session.topic("NDEATH"), death, qos=1)
            try:
                await asyncio.to_thread(info.wait_for_publish, timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("NDEATH not confirmed by the broker: %s", exc)
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        self.session.lost()
        self.buffer.close()
        log.debug("Sparkplug node stopped (%s): %s", reason, self.stats)
