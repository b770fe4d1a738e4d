"""Overload: when paho's bounded queue refuses a batch it stays on disk and is replayed, never stuck or lost."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from paho.mqtt.client import MQTT_ERR_QUEUE_SIZE

from fwcore.contract import Batch, Point, decode_batch, encode_batch
from gateway import Gateway, ModbusTcpDriver, TagValue, agent, parse_config
from gateway.buffer import DiskBuffer
from gateway.config import BufferConfig
from gateway.forward import Forwarder
from gateway.publisher import MAX_QUEUED_MESSAGES, MqttPublisher, PublisherCallbacks
from simulators import PumpModbusServer, PumpModel
from tests.support.clocks import FakeClock
from tests.support.waits import wait_until_async


class Delivery:
    def __init__(self, rc: int) -> None:
        self.rc = rc
        self.published = False

    def is_published(self) -> bool:
        return self.published


class Broker:
    """A send function whose queue is full while ``full`` is set."""

    def __init__(self) -> None:
        self.full = False
        self.accepted: list[bytes] = []

    def __call__(self, payload: bytes) -> Delivery:
        if self.full:
            return Delivery(MQTT_ERR_QUEUE_SIZE)
        self.accepted.append(payload)
        return Delivery(0)


def row(seq: int) -> tuple[int, int, bytes]:
    return seq, 1, encode_batch(Batch("gw", "site", seq, [Point("d", "t", seq, float(seq))]))


def test_refused_live_batches_are_replayed_when_the_queue_drains(tmp_path: Path) -> None:
    """Batches refused by a full queue are not counted as sent and go out as historical once it drains."""
    buf = DiskBuffer(tmp_path / "b.sqlite")
    broker, clock = Broker(), FakeClock()
    fw = Forwarder(buf, broker, BufferConfig(replay_rate=100.0), clock=clock)
    fw.on_connected()
    broker.full = True
    assert fw.store([row(1), row(2)]) == 0
    assert fw.refused == 2 and fw.sent_live == 0 and fw.backlog == 2
    clock.advance(1.0)
    assert fw.tick() == 0  # still full: nothing sent, nothing lost
    assert fw.backlog == 2 and buf.depth == 2
    broker.full = False
    clock.advance(1.0)
    assert fw.tick() == 2
    replayed = [decode_batch(p) for p in broker.accepted]
    assert [b.seq for b in replayed] == [1, 2] and all(b.historical for b in replayed)
    assert fw.on_ack([1, 2]) == 2 and buf.depth == 0
    buf.close()


async def test_publisher_queue_is_bounded() -> None:
    """The MQTT client holds at most MAX_QUEUED_MESSAGES; the next publish is refused, not queued in RAM."""
    pub = MqttPublisher("mqtt://127.0.0.1:1", "site", "gw", PublisherCallbacks(lambda: None, lambda r: None, print))
    infos = [pub.publish("fw/v1/site/gw/telemetry", b"x" * 100) for _ in range(MAX_QUEUED_MESSAGES + 1)]
    assert all(i.rc != MQTT_ERR_QUEUE_SIZE for i in infos[:-1])
    assert infos[-1].rc == MQTT_ERR_QUEUE_SIZE


class SwallowingDriver(ModbusTcpDriver):
    """A real Modbus driver whose poll loses one cancellation, as Python 3.11's wait_for does under load."""

    polls_started = 0

    async def poll(self) -> list[TagValue]:
        SwallowingDriver.polls_started += 1
        with contextlib.suppress(asyncio.CancelledError):
            # Time must pass: this stands for a slow answer, in flight when the cancel arrives.
            await asyncio.sleep(0.5)  # the answer and the cancel arrive together
        return await super().poll()


async def test_stop_returns_when_a_poll_swallows_the_cancel(
    mqtt_url: str, uid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateway.stop() finishes promptly even when a library swallows the cancellation of an in-flight poll."""
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1)})
    await server.start()
    # make_driver(device, buses): the driver class alone would crash on the second argument, and a crashed
    # poll task never has a poll in flight for stop() to cancel.
    monkeypatch.setattr(agent, "make_driver", lambda device, buses=None: SwallowingDriver(device))
    cfg = parse_config(
        {
            "gateway": f"gw-{uid}",
            "site": f"site-{uid}",
            "poll_interval": 0.1,
            "state_dir": str(tmp_path),
            "devices": [{"name": "pump-1", "host": "127.0.0.1", "port": server.port, "profile": "pump-p100"}],
        }
    )
    gw = Gateway(cfg, mqtt_url=mqtt_url)
    monkeypatch.setattr(SwallowingDriver, "polls_started", 0)
    try:
        await gw.start()
        await wait_until_async(lambda: SwallowingDriver.polls_started > 0, 5, what="a poll in flight")
        await asyncio.wait_for(gw.stop(), 3.0)
    finally:
        await gw.stop()
        await server.stop()
