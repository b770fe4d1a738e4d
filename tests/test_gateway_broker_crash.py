"""Store-and-forward when the broker is SIGKILLed at the moment the gateway publishes.

The broker is a private ``mosquitto`` (the shared one is never killed). :class:`KillAtPublish`
wraps the gateway's paho client so that, once armed, its next telemetry publish is the moment
of the crash: either paho has already seen the socket close (it answers "not connected" and keeps
the batch for the next connection) or the batch is on its way out when the broker dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from gateway import Gateway, parse_config
from ingest import IngestWorker
from simulators import PumpModbusServer, PumpModel
from tests.support.acker import Acker
from tests.support.brokers import PrivateMosquitto
from tests.support.registry import register
from tests.support.waits import wait_until, wait_until_async

POLL = 0.2


class KillAtPublish:
    """Once armed, the next telemetry publish of ``client`` SIGKILLs ``broker`` first (``before``) or right after."""

    def __init__(self, client: mqtt.Client, broker: PrivateMosquitto) -> None:
        self.client = client
        self.broker = broker
        self.real = client.publish
        self.armed: str | None = None
        self.fired = threading.Event()
        #: paho's return code for each publish made at the moment of a crash.
        self.rcs: list[int] = []
        client.publish = self._publish  # type: ignore[method-assign]

    def arm(self, when: str) -> None:
        assert when in ("before", "after")
        self.fired.clear()
        self.armed = when

    def _publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False, **kw: Any) -> Any:
        when, self.armed = (self.armed, None) if topic.endswith("/telemetry") else (None, self.armed)
        if when == "before":
            self.broker.kill()
            # paho's network thread sees the socket close within milliseconds; this publish then finds
            # no connection, which is the case that broke the forwarder.
            wait_until(lambda: self.client.socket() is None, 5, what="paho to notice the broker died", interval=0.001)
        info = self.real(topic, payload, qos=qos, retain=retain, **kw)
        if when == "after":
            self.broker.kill()
        if when is not None:
            self.rcs.append(info.rc)
            self.fired.set()
        return info


@pytest.fixture
async def sim() -> AsyncIterator[PumpModbusServer]:
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=5)}, update_interval=0.05)
    await server.start()
    yield server
    await server.stop()


def gateway_config(site: str, gateway: str, state_dir: Path, sim_port: int, broker_url: str, **buffer: Any) -> Any:
    return parse_config(
        {
            "site": site,
            "gateway": gateway,
            "mqtt_url": broker_url,
            "poll_interval": POLL,
            "state_dir": str(state_dir),
            "buffer": {"replay_grace": 0.5, "replay_rate": 50, **buffer},
            "devices": [{"name": "pump-1", "host": "127.0.0.1", "port": sim_port, "profile": "pump-p100"}],
        }
    )


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records of the gateway (but a device that stops answering) and of asyncio ("Exception in callback")."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and r.name.split(".")[0] in ("gateway", "asyncio")
        and not r.getMessage().startswith("device ")
    ]


async def reconnected(gw: Gateway, before: int, timeout: float = 20.0) -> None:
    await wait_until_async(lambda: gw.stats.mqtt_reconnects > before and gw.stats.mqtt_connected, timeout)


async def test_batch_paho_refused_as_not_connected_is_delivered_and_replay_keeps_running(
    tmp_path: Path, uid: str, sim: PumpModbusServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch published after the broker died (paho: "not connected") and batches the restarted broker
    lost are all delivered, the replay task keeps running, and no gateway error is logged."""
    caplog.set_level(logging.WARNING)
    site, gateway = f"site-{uid}", f"gw-{uid}"
    with PrivateMosquitto(workdir=tmp_path / "broker") as broker:
        cfg = gateway_config(site, gateway, tmp_path, sim.port, broker.url, ack_timeout=2.0)
        acker = Acker(broker.port, site, gateway)
        gw = Gateway(cfg)
        try:
            async with gw:
                await gw.wait_connected()
                assert gw.publisher is not None
                chaos = KillAtPublish(gw.publisher.client, broker)
                await wait_until_async(lambda: len(acker.seqs()) >= 3, 10, what="live batches before the crash")
                chaos.arm("before")
                await wait_until_async(chaos.fired.is_set, 5, what="a publish at the moment of the crash")
                assert chaos.rcs == [mqtt.MQTT_ERR_NO_CONN]
                # Ingest is not back when the broker is: what the gateway sends first reaches nobody.
                acker.close()
                before_crash = acker.seqs()
                reconnects = gw.stats.mqtt_reconnects
                broker.start()
                await reconnected(gw, reconnects)
                lost_from = gw.stats.last_seq
                await wait_until_async(lambda: gw.stats.last_seq >= lost_from + 3, 10, what="batches nobody received")
                acker = Acker(broker.port, site, gateway)
                target = gw.stats.last_seq
                wanted = set(range(1, target + 1))
                await wait_until_async(
                    lambda: before_crash | acker.seqs() >= wanted,
                    20,
                    what=f"every seq up to {target}",
                    observe=lambda: sorted(wanted - before_crash - acker.seqs()),
                )
                await wait_until_async(lambda: gw.stats.unacked <= 2, 10, what="acks to empty the buffer")
                assert gw.stats.batches_republished > 0
                assert failures(caplog) == []
        finally:
            acker.close()


async def test_a_crashed_background_task_is_logged_at_once_and_restarted(
    tmp_path: Path, uid: str, sim: PumpModbusServer, caplog: pytest.LogCaptureFixture, mqtt_url: str
) -> None:
    """When the replay task raises, the traceback is logged at ERROR right away and the task runs again."""
    caplog.set_level(logging.INFO)
    cfg = gateway_config(f"site-{uid}", f"gw-{uid}", tmp_path, sim.port, mqtt_url)
    gw = Gateway(cfg)
    async with gw:
        forwarder = gw._forwarder
        assert forwarder is not None
        real_tick = forwarder.tick
        calls = [0]

        def tick() -> int:
            calls[0] += 1
            if calls[0] == 1:
                raise RuntimeError("injected replay failure")
            return real_tick()

        forwarder.tick = tick  # type: ignore[method-assign]
        await wait_until_async(lambda: calls[0] >= 3, 10, what="the replay task to run again after crashing")
        logged = [r for r in caplog.records if r.levelno == logging.ERROR and "replay" in r.getMessage()]
        assert logged and logged[0].exc_info is not None
        assert "injected replay failure" in str(logged[0].exc_info[1])
        assert gw.stats.task_restarts == 1


def stored_points(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    return int(row[0]) if row else 0


async def test_broker_killed_at_publish_time_repeatedly_loses_and_duplicates_nothing(
    db_url: str, tmp_path: Path, uid: str, sim: PumpModbusServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Six broker crashes at the moment of publishing, under steady polling, through the real ingest:
    every point the gateway buffered is stored exactly once and the buffer drains."""
    caplog.set_level(logging.WARNING)
    reg = register(db_url, uid, devices=("pump-1",))
    with PrivateMosquitto(persistence=True, workdir=tmp_path / "broker") as broker:
        worker = IngestWorker(db_url, broker.url, client_id=f"ingest-{uid}", site_filter=reg.site)
        worker.start()
        cfg = gateway_config(reg.site, reg.gateway, tmp_path, sim.port, broker.url, ack_timeout=3.0)
        gw = Gateway(cfg)
        try:
            async with gw:
                await gw.wait_connected()
                assert gw.publisher is not None
                chaos = KillAtPublish(gw.publisher.client, broker)
                for i in range(6):
                    before = stored_points(db_url)
                    await wait_until_async(
                        lambda: stored_points(db_url), 20, done=lambda n, b=before: n > b, what="data flowing again"
                    )
                    reconnects = gw.stats.mqtt_reconnects
                    chaos.arm("before" if i % 2 == 0 else "after")
                    await wait_until_async(chaos.fired.is_set, 5, what="a publish at the moment of the crash")
                    broker.start()
                    await reconnected(gw, reconnects)
                    await wait_until_async(lambda: worker.broker_connected, 20, what="ingest to reconnect")
                assert mqtt.MQTT_ERR_NO_CONN in chaos.rcs
                await sim.unplug()  # the device goes quiet: its last points are the bad-quality ones
                await wait_until_async(lambda: not gw.stats.device_online["pump-1"], 10)
                await settled(gw)
                expected = gw.stats.points_buffered
                await wait_until_async(
                    lambda: stored_points(db_url), 30, done=lambda n: n == expected, what=f"{expected} points stored"
                )
                await wait_until_async(lambda: gw.stats.unacked == 0, 15, what="the buffer to drain")
                assert stored_points(db_url) == expected
                assert worker.stats.dead_letters == 0
                assert failures(caplog) == []
        finally:
            worker.stop()


async def settled(gw: Gateway, quiet: float = 3 * POLL) -> None:
    """Wait until the gateway has buffered nothing new for ``quiet`` seconds (its last points are on disk)."""
    last: list[Any] = [gw.stats.points_buffered, time.monotonic()]

    def quiet_enough() -> bool:
        if gw.stats.points_buffered != last[0]:
            last[:] = [gw.stats.points_buffered, time.monotonic()]
        return time.monotonic() - last[1] >= quiet

    await wait_until_async(quiet_enough, 10, what="the gateway to stop buffering new points")
