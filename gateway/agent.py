"""The gateway agent: poll every device on its own task, batch, publish, track acks.

Shape::

    device task (one per device) --points--> pending list --every publish interval--> Batch
                                                                       |  seq from SequenceStore
                                                                       v
                                          DiskBuffer (SQLite WAL, fsync) --Forwarder, QoS 1--> broker
                                                       ^ deleted when ingest acks the seq

A dead device never delays the others: each device has its own task, its own
connection and its own backoff. When a device fails, its tags are published
**once** with the bad quality of the failure (so consumers know the last value
is stale), the device is marked offline in :attr:`Gateway.stats`, the error is
logged once at ERROR, and the device is retried quietly with exponential backoff
and jitter until it answers; recovery is logged at INFO.

Every batch is written to the on-disk buffer (:mod:`gateway.buffer`) before it
is published and deleted only when ingest acks its seq; :mod:`gateway.forward`
decides what is sent when (live first, backlog replayed at a bounded rate,
marked ``historical``).

Tags with a deadband are reported by exception (:mod:`gateway.report`); every
device's poll latency, overruns and reconnects are counted in
:class:`gateway.health.DeviceHealth`, published on the ``health`` topic every
``health_interval`` and served as Prometheus metrics (``metrics_port``).
A device going online/offline republishes the retained status with a
``devices`` map, so the status topic always says which devices answer.

Remote configuration (:mod:`gateway.remote_config`): the gateway subscribes to
its ``config`` topic; :meth:`Gateway.apply_devices` stops, starts or restarts
only the poll tasks of devices a new config adds, removes or changes — the
others keep running, and the buffer and sequence are untouched.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import orjson
import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, start_http_server

from fwcore.contract import (
    MAX_POINTS_PER_MESSAGE,
    Batch,
    ContractError,
    Point,
    decode_ack,
    encode_batch,
    encode_status,
    topic,
)
from fwcore.retry import backoff_delays
from fwcore.settings import Settings, get_settings
from fwcore.tls import mqtt_tls_context
from gateway.blockdecode import to_points
from gateway.buffer import DiskBuffer
from gateway.config import Device, GatewayConfig
from gateway.drivers import Driver, import_drivers, make_driver
from gateway.errors import DeviceError, GatewayError
from gateway.forward import Delivery, Forwarder
from gateway.health import BufferHealth, DeviceHealth, GatewayCollector, HealthSnapshot, health_payload
from gateway.publisher import MqttPublisher, Publisher, PublisherCallbacks
from gateway.remote_config import DeviceDiff, RemoteConfigManager
from gateway.report import ExceptionFilter, ReportPolicy
from gateway.sequence import SequenceStore
from gateway.serialbus import SerialBus
from gateway.sparkplug import SparkplugNode

log = logging.getLogger(__name__)


#: Points per telemetry message. Well below the contract's 10,000 because of bytes: a point with
#: 64-character device and tag names is ~210 bytes of JSON, and 2,000 of them stay under half of
#: ingest's 1 MiB MAX_PAYLOAD_BYTES (an oversized batch would be dead-lettered, not stored).
POINTS_PER_BATCH = min(2_000, MAX_POINTS_PER_MESSAGE)

#: A device poll loop that ran this long (seconds) before crashing gets its crash logged at ERROR again.
CRASH_QUIET_RESET = 300.0


def _settings() -> Settings:
    """Process settings, read only when the config leaves something out."""
    return get_settings()


def _ms(t: float) -> int:
    return int(t * 1000)


#: Seconds :meth:`Gateway.stop` waits for its tasks before giving up on them (and saying which).
STOP_TIMEOUT = 5.0


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation a library swallowed.

    Python 3.11's ``asyncio.wait_for`` (used inside pymodbus) drops a cancel that arrives as the
    answer does. Under overload a poll is nearly always in flight when :meth:`Gateway.stop`
    cancels, so the device loop carried on and ``stop()`` waited for it forever (the
    ``bench/gateway.py --poll-interval 0.1`` hang).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(slots=True)
class GatewayStats:
    """Counters a health endpoint or a test can read."""

    points_buffered: int = 0  # points written to the disk buffer (every reading that is to be sent)
    points_published: int = 0  # of those, points handed to MQTT at once (connected); the rest wait on disk
    batches_published: int = 0
    batches_republished: int = 0
    batches_acked: int = 0
    batches_dropped: int = 0
    last_seq: int = 0
    unacked: int = 0
    points_dropped: int = 0
    points_suppressed: int = 0
    publish_errors: int = 0  # paho refused a publish (queue full, not connected); the batch stays on disk
    errors: int = 0
    task_restarts: int = 0  # tasks (device polls, publish, replay, health) restarted after an unexpected exception
    mqtt_connected: bool = False
    mqtt_reconnects: int = 0
    device_online: dict[str, bool] = field(default_factory=dict)
    device_errors: dict[str, str] = field(default_factory=dict)
    devices: dict[str, DeviceHealth] = field(default_factory=dict)


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
        metrics_port: int | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        #: The YAML file the config came from; an accepted remote config is saved beside it.
        self.config_path = config_path
        self.metrics_port = metrics_port if metrics_port is not None else config.metrics_port
        self.mqtt_url = mqtt_url or config.mqtt_url or _settings().mqtt_url
        self.mqtt_protocol = mqtt_protocol or config.mqtt_protocol or _settings().mqtt_protocol
        #: The broker TLS section of the config, else the settings' (FIELDWATCH_MQTT_CA_FILE, ...).
        self.mqtt_tls = config.mqtt_tls.files() if config.mqtt_tls is not None else _settings().mqtt_tls
        mqtt_tls_context(self.mqtt_url, self.mqtt_tls)  # a TLS file that cannot be used fails here, naming it
        state_dir = config.state_dir or _settings().state_dir
        self.sequence = SequenceStore(state_dir, config.site, config.gateway)
        self.telemetry_topic = topic(config.site, config.gateway, "telemetry")
        self.stats = GatewayStats(
            device_online={d.name: False for d in config.devices},
            devices={d.name: DeviceHealth() for d in config.devices},
        )
        self.health_topic = topic(config.site, config.gateway, "health")
        self.status_topic = topic(config.site, config.gateway, "status")
        #: The gateway's own Prometheus registry (one per gateway, so tests can run several).
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(self.health_snapshot))
        self._metrics_server: tuple[WSGIServer, threading.Thread] | None = None
        self._started_at = time.monotonic()
        self._ever_connected = False
        self._rbe = ExceptionFilter()
        self._oldest_unacked_ms: int | None = None
        self._clock = clock
        self.buffer_path = Path(state_dir) / f"buffer-{config.site}-{config.gateway}.sqlite"
        self._buffer: DiskBuffer | None = None
        self._forwarder: Forwarder | None = None
        self._pending: list[Point] = []
        self._tasks: list[asyncio.Task[None]] = []
        #: One poll task per device, by name (remote config starts/stops them one by one).
        self._device_tasks: dict[str, asyncio.Task[None]] = {}
        #: How often each device's poll task was started (1 unless a remote config changed the device).
        self.device_starts: dict[str, int] = {}
        self.config_topic = topic(config.site, config.gateway, "config")
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start(); paho callbacks hop onto it
        self.remote = RemoteConfigManager(self, config_path)
        self._buses: dict[str, SerialBus] = {}  # Modbus RTU: one shared line per serial port
        self._publisher: Publisher | None = None
        self._sparkplug: SparkplugNode | None = None  # set in Sparkplug B mode (config.sparkplug)
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()
        self._state = "new"  # new -> running -> stopped

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to the broker in the background and start one task per device."""
        if self._state != "new":
            return
        self._state = "running"
        self._loop = asyncio.get_running_loop()
        self.stats.last_seq = self.sequence.last  # fail early on a corrupt sequence file
        b = self.config.buffer
        self._buffer = DiskBuffer(self.buffer_path, max_bytes=b.max_bytes, max_age=b.max_age, sync=b.sync)
        self.sequence.advance_to(self._buffer.max_seq())  # never reuse a seq still on disk
        self.stats.last_seq = self.sequence.last
        self._forwarder = Forwarder(self._buffer, self._publish_telemetry, b)
        self._update_buffer_stats()
        callbacks = PublisherCallbacks(self._on_connected, self._on_disconnected, self._on_ack)
        publisher: Publisher
        if self.config.sparkplug is not None and self.config.sparkplug.enabled:  # same surface as MqttPublisher
            self._sparkplug = SparkplugNode(
                self.config,
                self.buffer_path.parent,
                self.mqtt_url,
                callbacks,
                protocol=self.mqtt_protocol,
                tls=self.mqtt_tls,
            )
            publisher = self._sparkplug
        else:
            publisher = MqttPublisher(
                self.mqtt_url,
                self.config.site,
                self.config.gateway,
                callbacks,
                protocol=self.mqtt_protocol,
                state_dir=self.buffer_path.parent,
                keepalive=self.config.mqtt_keepalive,
                tls=self.mqtt_tls,
            )
        self._publisher = publisher
        publisher.start()
        if self.metrics_port is not None:
            self._start_metrics(self.metrics_port)
        await import_drivers(self.config.devices)  # off the loop, before any device polls
        for device in self.config.devices:
            self._start_device(device)
        if self._sparkplug is None:  # Sparkplug B mode is configured through its own commands
            publisher.client.message_callback_add(self.config_topic, self._on_config_message)
        for name, loop in (
            ("publish", self._publish_loop),
            ("replay", self._replay_loop),
            ("health", self._health_loop),
        ):
            self._tasks.append(asyncio.create_task(self._keep_running(name, loop), name=name))
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
        await self.remote.aclose()
        self._tasks.extend(self._device_tasks.values())
        self._device_tasks.clear()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
            if stuck:  # never hang a shutdown on one task; say which, and go on
                log.error(
                    "tasks still running %.0f s after stop: %s", STOP_TIMEOUT, ", ".join(t.get_name() for t in stuck)
                )
            for task in self._tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("task %s had failed: %r", task.get_name(), task.exception())
        self._tasks.clear()
        if was_running:
            self._flush()
        if self._publisher is not None:
            await self._publisher.stop("shutdown")
        if self._buffer is not None:
            self._buffer.close()
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            self._metrics_server = None
            server.shutdown()
            server.server_close()
            thread.join(2.0)
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
    def publisher(self) -> Publisher | None:
        """The broker connection (``None`` before :meth:`start`)."""
        return self._publisher

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _keep_running(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one of the gateway's own loops (publish, replay, health) for the gateway's whole life.

        These loops keep no state of their own between iterations (the pending points, the
        forwarder's bookkeeping and the disk buffer live on the gateway), so restarting one
        resumes exactly where it stopped; exiting the process instead would throw away the
        pending points and every device connection. An exception is therefore logged at once at
        ERROR with its traceback (further crashes at DEBUG until the loop has run for
        :data:`CRASH_QUIET_RESET` seconds), counted in ``stats.task_restarts``, and the loop is
        started again after a short backoff. A task that died silently used to stop all replay
        until the process restarted, found only in the shutdown log.
        """
        delays = backoff_delays(base=0.1, cap=30.0)
        logged = False
        while True:
            started = time.monotonic()
            try:
                await loop()
                return
            except Exception:
                _raise_if_cancelling()
                self.stats.task_restarts += 1
                if time.monotonic() - started >= CRASH_QUIET_RESET:
                    logged = False
                    delays = backoff_delays(base=0.1, cap=30.0)
                if not logged:
                    logged = True
                    log.exception("gateway task %r crashed; restarting it", name)
                else:
                    log.debug("gateway task %r crashed again; restarting it", name, exc_info=True)
                await asyncio.sleep(next(delays))

    # --- devices: start, stop, apply a new config -----------------------------------------
    def _start_device(self, device: Device, driver: Driver | None = None) -> None:
        """Start ``device``'s poll task (fresh health counters, offline until it answers)."""
        self.stats.devices[device.name] = DeviceHealth()
        self.stats.device_online[device.name] = False
        self.device_starts[device.name] = self.device_starts.get(device.name, 0) + 1
        self._device_tasks[device.name] = asyncio.create_task(
            self._supervise(device, driver), name=f"poll-{device.name}"
        )

    async def _stop_device(self, name: str) -> None:
        """Cancel ``name``'s poll task and wait for it (its driver closes in the loop's ``finally``)."""
        task = self._device_tasks.pop(name, None)
        if task is not None:
            task.cancel()
            _, stuck = await asyncio.wait([task], timeout=STOP_TIMEOUT)
            if stuck:
                log.error("poll task of device %r still running %.0f s after cancel", name, STOP_TIMEOUT)
        self.stats.device_errors.pop(name, None)

    async def apply_devices(self, new: GatewayConfig, diff: DeviceDiff) -> None:
        """Make ``new`` the running config, touching only the devices ``diff`` adds, removes or changes.

        Drivers for added/changed devices are built first: if one cannot be built, nothing has
        changed and the error propagates. Unchanged devices keep their task and connection; the
        disk buffer, sequence and pending points are not touched. Safe to call with the old config
        and the reverse diff to roll back.
        """
        by_name = {d.name: d for d in new.devices}
        await import_drivers(by_name[name] for name in diff.restarted)  # a first OPC-UA device: not on the loop
        drivers = {name: make_driver(by_name[name], self._buses) for name in diff.restarted}
        for name in (*diff.removed, *diff.changed):
            await self._stop_device(name)
        for name in diff.removed:
            self.stats.devices.pop(name, None)
            self.stats.device_online.pop(name, None)
            for gone in self.config.devices:
                if gone.name == name:  # report-by-exception state of a device that no longer exists
                    for t in gone.tags:
                        self._rbe.forget((name, t.name))
        self.config = new
        for name in diff.restarted:
            self._start_device(by_name[name], drivers[name])
        self.publish_status()

    def _on_config_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """paho thread: hand a config message to the event loop."""
        payload = bytes(message.payload)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._config_received, payload)

    def _config_received(self, payload: bytes) -> None:
        if self._state == "running":
            self.remote.submit(payload)

    # --- polling -----------------------------------------------------------------------
    async def _supervise(self, device: Device, driver: Driver | None = None) -> None:
        """Run ``device``'s poll loop and restart it (with backoff) when it crashes on an unexpected exception.

        Device failures are :class:`DeviceError` and handled inside the loop; anything else is a
        bug (in a driver, a library or ours) that must not silently end polling of the device.
        The traceback is logged once at ERROR; further crashes are logged at DEBUG until the loop
        has run for :data:`CRASH_QUIET_RESET` seconds without crashing.
        """
        interval = device.poll_interval or self.config.poll_interval
        delays = backoff_delays(base=min(1.0, interval), cap=30.0)
        logged = False
        while True:
            started = time.monotonic()
            try:
                await self._device_loop(device, driver)
                return
            except Exception:
                _raise_if_cancelling()
                self.stats.task_restarts += 1
                if time.monotonic() - started >= CRASH_QUIET_RESET:
                    logged = False
                    delays = backoff_delays(base=min(1.0, interval), cap=30.0)
                if not logged:
                    logged = True
                    log.exception("poll task of device %r crashed; restarting it with backoff", device.name)
                else:
                    log.debug("poll task of device %r crashed again; restarting it", device.name, exc_info=True)
                if self.stats.devices[device.name].online:
                    self._set_online(device.name, False)
                driver = None  # a crashed loop gets a fresh driver
                await asyncio.sleep(next(delays))

    async def _device_loop(self, device: Device, driver: Driver | None = None) -> None:
        driver = driver or make_driver(device, self._buses)
        interval = device.poll_interval or self.config.poll_interval
        delays = backoff_delays(base=min(1.0, interval), cap=30.0)
        health = self.stats.devices[device.name]
        policies = {t.name: t.report for t in device.tags}
        by_exception = any(not p.every_reading for p in policies.values())
        name = device.name
        in_error = False
        try:
            while True:
                poll_time = self._clock()
                started = time.perf_counter()
                try:
                    if not driver.connected:
                        await driver.connect()
                        health.connects += 1
                    values = await driver.poll()
                except DeviceError as exc:
                    _raise_if_cancelling()
                    self.stats.errors += 1
                    health.failures += 1
                    health.error = self.stats.device_errors[name] = str(exc)
                    if not in_error:
                        in_error = True
                        self._set_online(name, False)
                        log.error("%s; retrying with backoff until it answers", exc)
                        ts = _ms(poll_time)
                        points = [Point(name, t.name, ts, 0.0, exc.quality) for t in device.tags]
                        self._report(points, policies, poll_time) if by_exception else self._pending.extend(points)
                    await driver.close()
                    await asyncio.sleep(next(delays))
                    continue
                _raise_if_cancelling()
                health.record_poll(time.perf_counter() - started, interval)
                if in_error or not health.online:
                    if in_error:
                        log.info("device %r answers again", name)
                    in_error = False
                    health.error = ""
                    self.stats.device_errors.pop(name, None)
                    self._set_online(name, True)
                    delays = backoff_delays(base=min(1.0, interval), cap=30.0)
                ts = _ms(poll_time)
                points = to_points(name, ts, values)
                self._report(points, policies, poll_time) if by_exception else self._pending.extend(points)
                await self._sleep_until_next(interval)
        finally:
            await driver.close()

    def _report(self, points: list[Point], policies: dict[str, ReportPolicy], now: float) -> None:
        """Queue the points that pass report-by-exception; count the others as suppressed."""
        send = self._rbe.should_send
        kept = [p for p in points if send((p.device, p.tag), p.value, p.quality, now, policies[p.tag])]
        self.stats.points_suppressed += len(points) - len(kept)
        self._pending += kept

    def _set_online(self, device: str, online: bool) -> None:
        """Record a device's state and republish the retained status with every device's state."""
        self.stats.device_online[device] = online
        self.stats.devices[device].online = online
        if self._sparkplug is not None:  # Sparkplug: its earlier points go first, then DDEATH (DBIRTH with data)
            self._flush()
            self._sparkplug.set_device_online(device, online)
            return
        self.publish_status()

    def publish_status(self) -> None:
        """Republish the retained status now (device states, profiles, tags and units, config version and outcome)."""
        publisher = self._publisher
        if publisher is None or not self._connected.is_set() or self._state != "running" or self._sparkplug:
            return  # the next connect republishes it (Sparkplug mode: NBIRTH/DBIRTH/DDEATH say it instead)
        assert isinstance(publisher, MqttPublisher)
        devices = {n: "online" if d.online else "offline" for n, d in self.stats.devices.items()}
        profiles = {d.name: d.profile_label for d in self.config.devices if d.profile_label}
        # Every tag with its unit: ingest discovers devices nobody registered and gives series their units.
        tags = {d.name: {t.name: t.unit for t in d.tags} for d in self.config.devices}
        last = self.remote.last
        config = {"version": self.config.config_version, "last": last.as_dict() if last else None}
        payload = encode_status(
            "online",
            gateway=self.config.gateway,
            ts=_ms(self._clock()),
            reason="connected",
            session=publisher.session,
            devices=devices,
            profiles=profiles,
            tags=tags,
            config=config,
        )
        publisher.publish(self.status_topic, payload, retain=True)

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

    async def _replay_loop(self) -> None:
        assert self._forwarder is not None
        while True:
            await asyncio.sleep(0.05)
            sent = self._forwarder.tick()
            if sent:
                self.stats.batches_republished += sent
                self.stats.batches_published += sent
            self._update_buffer_stats()

    # --- health ------------------------------------------------------------------------
    def health_snapshot(self) -> HealthSnapshot:
        """Current health numbers (read by the health loop and by Prometheus scrapes)."""
        # Safe from the metrics thread: plain attribute reads, no SQLite (the oldest batch's
        # time is refreshed on the event loop by the health loop).
        buf = BufferHealth()
        b = self._buffer
        if b is not None:
            oldest = self._oldest_unacked_ms
            buf = BufferHealth(
                depth=b.depth,
                bytes=b.bytes,
                oldest_unacked_age_s=max(0.0, (_ms(self._clock()) - oldest) / 1000) if oldest is not None else 0.0,
                dropped_batches=b.dropped_batches,
                dropped_points=b.dropped_points,
            )
        publisher = self._publisher
        return HealthSnapshot(
            session=publisher.session if isinstance(publisher, MqttPublisher) else None,
            interval_s=self.config.health_interval,
            gateway=self.config.gateway,
            site=self.config.site,
            ts_ms=_ms(self._clock()),
            uptime_s=time.monotonic() - self._started_at,
            mqtt_connected=self.stats.mqtt_connected,
            mqtt_reconnects=self.stats.mqtt_reconnects,
            points_buffered=self.stats.points_buffered,
            points_published=self.stats.points_published,
            points_suppressed=self.stats.points_suppressed,
            buffer=buf,
            devices=dict(self.stats.devices),
        )

    def _refresh_oldest(self) -> None:
        b = self._buffer
        if b is not None and not b.closed:
            self._oldest_unacked_ms = b.oldest_created_ms() if b.depth else None

    async def _health_loop(self) -> None:
        interval = self.config.health_interval
        next_publish = time.monotonic() + interval
        while True:
            await asyncio.sleep(min(1.0, interval))
            self._refresh_oldest()
            if time.monotonic() < next_publish:
                continue
            next_publish += interval
            if self._publisher is not None and self._connected.is_set():
                payload = orjson.dumps(health_payload(self.health_snapshot()))
                self._publisher.client.publish(self.health_topic, payload, qos=0)

    def _start_metrics(self, port: int) -> None:
        try:
            server, thread = start_http_server(port, addr=self.config.metrics_host, registry=self.registry)
        except OSError as exc:
            raise GatewayError(
                f"cannot serve metrics on {self.config.metrics_host}:{port}: {exc.strerror}; "
                "pick a free port with --metrics-port"
            ) from exc
        self._metrics_server = (server, thread)
        self.metrics_port = int(server.server_address[1])
        log.info("Prometheus metrics on http://%s:%d/metrics", self.config.metrics_host, self.metrics_port)

    def _flush(self) -> None:
        """Turn pending points into batches, write them to disk, then send them (if connected)."""
        assert self._forwarder is not None
        points, self._pending = self._pending, []
        if self._sparkplug is not None:  # Sparkplug B: DBIRTH/DDATA now, or its own disk buffer while offline
            self.stats.points_published += self._sparkplug.publish_points(points)
            self.stats.points_buffered = self._sparkplug.stats.points_buffered  # only while unconnected there
            return
        if not points:
            return
        rows: list[tuple[int, int, bytes]] = []
        sent_at = _ms(self._clock())
        starts = range(0, len(points), POINTS_PER_BATCH)
        seq = self.sequence.reserve(len(starts))  # one persisted write for the whole tick
        for n, i in enumerate(starts):
            chunk = points[i : i + POINTS_PER_BATCH]
            batch = Batch(self.config.gateway, self.config.site, seq + n, chunk, sent_at=sent_at)
            rows.append((batch.seq, len(chunk), encode_batch(batch)))
            self.stats.last_seq = batch.seq
        live_before = self._forwarder.sent_live
        self.stats.points_buffered += len(points)
        self.stats.points_published += self._forwarder.store(rows)
        self.stats.batches_published += self._forwarder.sent_live - live_before
        self._update_buffer_stats()

    def _publish_telemetry(self, payload: bytes) -> Delivery:
        publisher = self._publisher
        assert isinstance(publisher, MqttPublisher)  # Sparkplug mode sends no fieldwatch telemetry
        sent = publisher.publish_tracked(self.telemetry_topic, payload)
        if sent.rc:
            self.stats.publish_errors += 1
        return sent

    def _update_buffer_stats(self) -> None:
        if self._buffer is None:
            return
        self.stats.unacked = self._buffer.depth
        self.stats.batches_dropped = self._buffer.dropped_batches
        self.stats.points_dropped = self._buffer.dropped_points

    # --- MQTT events (on the loop, via call_soon_threadsafe) ---------------------------
    def _on_connected(self) -> None:
        self._connected.set()
        self.stats.mqtt_connected = True
        if self._ever_connected:
            self.stats.mqtt_reconnects += 1
        self._ever_connected = True
        if self._sparkplug is None and self._publisher is not None:
            self._publisher.client.subscribe(self.config_topic, qos=1)  # the retained config comes (again)
        self.publish_status()  # the birth carries no device states; this follows it
        if self._forwarder is not None:
            self._forwarder.on_connected()
        log.info("broker connected")

    def _on_disconnected(self, reason: str) -> None:
        if self._connected.is_set() and self._state == "running":
            log.warning("broker connection lost (%s); buffering batches on disk until it is back", reason)
        self._connected.clear()
        self.stats.mqtt_connected = False
        if self._forwarder is not None:
            self._forwarder.on_disconnected()

    def _on_ack(self, payload: bytes) -> None:
        try:
            seqs = decode_ack(payload)
        except (ContractError, ValueError) as exc:
            log.warning("ignoring malformed ack: %s", exc)
            return
        if self._forwarder is None or self._state != "running":
            return
        self.stats.batches_acked += self._forwarder.on_ack(seqs)
        self._update_buffer_stats()
