"""The gateway agent: poll every device on its own task, batch, publish, track acks.

Shape::

    device task (one per device) --points--> pending list --every publish interval--> Batch
                                                                       |  seq from SequenceStore
                                                                       v
                                                  unacked (bounded, in memory) --QoS 1--> broker
                                                       ^ dropped when ingest acks the seq

A dead device never delays the others: each device has its own task, its own
connection and its own backoff. When a device fails, its tags are published
**once** with the bad quality of the failure (so consumers know the last value
is stale), the device is marked offline in :attr:`Gateway.stats`, the error is
logged once at ERROR, and the device is retried quietly with exponential backoff
and jitter until it answers; recovery is logged at INFO.

Unacked batches are held in memory (bounded by ``max_unacked_batches``; the
oldest is dropped with a WARNING when full). After a reconnect every unacked
batch is published again, marked ``historical``. A disk buffer replaces the
memory store in a later issue; :class:`UnackedStore` is the seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fieldwatch.contract import MAX_POINTS_PER_MESSAGE, Batch, ContractError, Point, decode_ack, encode_batch, topic
from fieldwatch.settings import Settings, get_settings
from gateway.config import GatewayConfig, ModbusTcpDevice
from gateway.errors import DeviceError
from gateway.modbus import ModbusTcpDriver
from gateway.publisher import MqttPublisher, PublisherCallbacks
from gateway.retry import backoff_delays
from gateway.sequence import SequenceStore

log = logging.getLogger(__name__)


def _settings() -> Settings:
    """Process settings, read only when the config leaves something out."""
    return get_settings()


def _ms(t: float) -> int:
    return int(t * 1000)


@dataclass(slots=True)
class GatewayStats:
    """Counters a health endpoint or a test can read."""

    points_published: int = 0
    batches_published: int = 0
    batches_republished: int = 0
    batches_acked: int = 0
    batches_dropped: int = 0
    last_seq: int = 0
    unacked: int = 0
    errors: int = 0
    mqtt_connected: bool = False
    device_online: dict[str, bool] = field(default_factory=dict)
    device_errors: dict[str, str] = field(default_factory=dict)


class UnackedStore:
    """Batches published but not yet acknowledged by ingest, oldest first, bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._batches: OrderedDict[int, Batch] = OrderedDict()

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, batch: Batch) -> Batch | None:
        """Keep ``batch``; return the batch dropped to make room, if any."""
        self._batches[batch.seq] = batch
        if len(self._batches) > self.limit:
            return self._batches.popitem(last=False)[1]
        return None

    def ack(self, seqs: list[int]) -> int:
        """Forget acknowledged batches; return how many were held."""
        return sum(self._batches.pop(s, None) is not None for s in seqs)

    def all(self) -> list[Batch]:
        return list(self._batches.values())


class Gateway:
    """Polls the configured devices and publishes their points to MQTT.

    ``mqtt_url``/``mqtt_protocol`` override the config, which overrides settings
    (``FIELDWATCH_MQTT_URL``, ``FIELDWATCH_MQTT_PROTOCOL``).
    """

    def __init__(
        self,
        config: GatewayConfig,
        mqtt_url: str | None = None,
        mqtt_protocol: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.mqtt_url = mqtt_url or config.mqtt_url or _settings().mqtt_url
        self.mqtt_protocol = mqtt_protocol or config.mqtt_protocol or _settings().mqtt_protocol
        state_dir = config.state_dir or _settings().state_dir
        self.sequence = SequenceStore(state_dir, config.site, config.gateway)
        self.telemetry_topic = topic(config.site, config.gateway, "telemetry")
        self.stats = GatewayStats(device_online={d.name: False for d in config.devices})
        self._clock = clock
        self._unacked = UnackedStore(config.max_unacked_batches)
        self._pending: list[Point] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher: MqttPublisher | None = None
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()
        self._state = "new"  # new -> running -> stopped

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to the broker in the background and start one task per device."""
        if self._state != "new":
            return
        self._state = "running"
        self.stats.last_seq = self.sequence.last  # fail early on a corrupt sequence file
        self._publisher = MqttPublisher(
            self.mqtt_url,
            self.config.site,
            self.config.gateway,
            PublisherCallbacks(self._on_connected, self._on_disconnected, self._on_ack),
            protocol=self.mqtt_protocol,
        )
        self._publisher.start()
        for device in self.config.devices:
            self._tasks.append(asyncio.create_task(self._device_loop(device), name=f"poll-{device.name}"))
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="publish"))
        log.info(
            "gateway %s/%s started: %d devices, publishing to %s",
            self.config.site,
            self.config.gateway,
            len(self.config.devices),
            self.telemetry_topic,
        )

    async def stop(self) -> None:
        """Stop polling, flush pending points, publish ``offline``/``shutdown`` and disconnect. Safe twice."""
        if self._state == "stopped":
            return
        was_running = self._state == "running"
        self._state = "stopped"
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if was_running:
            self._flush()
        if self._publisher is not None:
            await self._publisher.stop("shutdown")
        self._stopped.set()

    async def run_forever(self) -> None:
        """Start and run until :meth:`stop` is called (or the task is cancelled)."""
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the broker connection is up (tests, readiness checks)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    @property
    def publisher(self) -> MqttPublisher | None:
        """The broker connection (``None`` before :meth:`start`)."""
        return self._publisher

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- polling -----------------------------------------------------------------------
    async def _device_loop(self, device: ModbusTcpDevice) -> None:
        driver = ModbusTcpDriver(device)
        interval = device.poll_interval or self.config.poll_interval
        delays = backoff_delays(base=min(1.0, interval), cap=30.0, rng=random.Random())
        in_error = False
        try:
            while True:
                poll_time = self._clock()
                try:
                    if not driver.connected:
                        await driver.connect()
                    values = await driver.poll()
                except DeviceError as exc:
                    self.stats.errors += 1
                    self.stats.device_errors[device.name] = str(exc)
                    if not in_error:
                        in_error = True
                        self.stats.device_online[device.name] = False
                        log.error("%s; retrying with backoff until it answers", exc)
                        ts = _ms(poll_time)
                        self._pending += [Point(device.name, t.name, ts, 0.0, exc.quality) for t in device.tags]
                    await driver.close()
                    await asyncio.sleep(next(delays))
                    continue
                if in_error or not self.stats.device_online[device.name]:
                    if in_error:
                        log.info("device %r answers again", device.name)
                    in_error = False
                    self.stats.device_online[device.name] = True
                    self.stats.device_errors.pop(device.name, None)
                    delays = backoff_delays(base=min(1.0, interval), cap=30.0, rng=random.Random())
                ts = _ms(poll_time)
                self._pending += [Point(device.name, v.tag.name, ts, v.value, v.quality) for v in values]
                await self._sleep_until_next(interval)
        finally:
            await driver.close()

    async def _sleep_until_next(self, interval: float, phase: float = 0.0) -> None:
        """Sleep to the next multiple of ``interval`` (+ ``phase``) so polls stay on a grid."""
        now = self._clock()
        nxt = (int((now - phase) / interval) + 1) * interval + phase
        await asyncio.sleep(max(0.0, nxt - now))

    # --- batching and publishing -------------------------------------------------------
    async def _publish_loop(self) -> None:
        interval = self.config.effective_publish_interval
        while True:
            # Half an interval after the poll grid: the polls of this tick have usually landed.
            await self._sleep_until_next(interval, phase=interval / 2)
            self._flush()

    def _flush(self) -> None:
        """Turn pending points into batches and send them (or keep them until connected)."""
        points, self._pending = self._pending, []
        for i in range(0, len(points), MAX_POINTS_PER_MESSAGE):
            batch = Batch(
                gateway=self.config.gateway,
                site=self.config.site,
                seq=self.sequence.next(),
                points=points[i : i + MAX_POINTS_PER_MESSAGE],
            )
            self.stats.last_seq = batch.seq
            dropped = self._unacked.add(batch)
            if dropped is not None:
                self.stats.batches_dropped += 1
                if self.stats.batches_dropped == 1 or self.stats.batches_dropped % 100 == 0:
                    log.warning(
                        "unacked buffer full (%d batches): dropped batch seq %d; %d dropped so far",
                        self._unacked.limit,
                        dropped.seq,
                        self.stats.batches_dropped,
                    )
            if self._connected.is_set():
                self._send(batch)
            self.stats.unacked = len(self._unacked)

    def _send(self, batch: Batch) -> None:
        assert self._publisher is not None
        batch.sent_at = _ms(self._clock())
        self._publisher.publish(self.telemetry_topic, encode_batch(batch))
        self.stats.batches_published += 1
        self.stats.points_published += len(batch.points)

    # --- MQTT events (on the loop, via call_soon_threadsafe) ---------------------------
    def _on_connected(self) -> None:
        self._connected.set()
        self.stats.mqtt_connected = True
        backlog = self._unacked.all()
        if backlog:
            log.info("broker connected; republishing %d unacked batches", len(backlog))
        for batch in backlog:
            replayed = replace(batch, historical=True)
            self._send(replayed)
            self.stats.batches_republished += 1
        if not backlog:
            log.info("broker connected")

    def _on_disconnected(self, reason: str) -> None:
        if self._connected.is_set() and self._state == "running":
            log.warning("broker connection lost (%s); keeping batches until it is back", reason)
        self._connected.clear()
        self.stats.mqtt_connected = False

    def _on_ack(self, payload: bytes) -> None:
        try:
            seqs = decode_ack(payload)
        except (ContractError, ValueError) as exc:
            log.warning("ignoring malformed ack: %s", exc)
            return
        self.stats.batches_acked += self._unacked.ack(seqs)
        self.stats.unacked = len(self._unacked)
