"""The gateway against the real Mosquitto: contract payloads, sequence, status birth/death, acks."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fwcore.contract import Batch, Quality, decode_batch, encode_ack, topic
from fwcore.settings import mqtt_parts
from gateway import Gateway, parse_config
from simulators import PumpModbusServer, PumpModel

MQTT_URL = os.environ.get("FIELDWATCH_MQTT_URL", "mqtt://127.0.0.1:1883")
POLL = 0.2


class Watcher:
    """A plain paho subscriber that queues (topic, payload, retain) for the test thread."""

    def __init__(self, filter_: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), bool(m.retain)))
        parts = mqtt_parts(MQTT_URL)
        self.client.connect(parts["host"], parts["port"])
        self.client.subscribe(filter_, qos=1)
        self.client.loop_start()

    async def next(self, match: Callable[[str, bytes, bool], bool], timeout: float = 5.0) -> tuple[str, bytes, bool]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.messages.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.02)
                continue
            if match(*msg):
                return msg
        raise AssertionError(f"no matching message within {timeout}s")

    async def batches(self, n: int, timeout: float = 5.0) -> list[Batch]:
        out = []
        for _ in range(n):
            _, payload, _ = await self.next(lambda t, p, r: t.endswith("/telemetry"), timeout)
            out.append(decode_batch(payload))
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def is_status(state: str, reason: str | None = None) -> Callable[[str, bytes, bool], bool]:
    def match(t: str, p: bytes, r: bool) -> bool:
        if not t.endswith("/status"):
            return False
        obj = orjson.loads(p)
        return obj["state"] == state and (reason is None or obj["reason"] == reason)

    return match


@pytest.fixture
def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"site-{suffix}", f"gw-{suffix}"


@pytest.fixture
async def sim() -> AsyncIterator[PumpModbusServer]:
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1)}, update_interval=0.05)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def watcher(names: tuple[str, str]) -> Iterator[Watcher]:
    w = Watcher(f"fw/v1/{names[0]}/{names[1]}/#")
    yield w
    w.close()


def config_data(names: tuple[str, str], state_dir: Path, *devices: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": names[0],
        "gateway": names[1],
        "poll_interval": POLL,
        "state_dir": str(state_dir),
        "devices": list(devices),
    }


def pump(port: int, name: str = "pump-1", **kw: Any) -> dict[str, Any]:
    return {"name": name, "host": "127.0.0.1", "port": port, "profile": "pump-p100", **kw}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_batches_follow_the_contract_and_seq_increases(
    protocol: str, names: tuple[str, str], sim: PumpModbusServer, watcher: Watcher, tmp_path: Path
) -> None:
    """Telemetry is contract-valid JSON with good pump points and seq increasing by one, on MQTT 5 and 3.1.1."""
    gw = Gateway(parse_config(config_data(names, tmp_path, pump(sim.port))), MQTT_URL, protocol)
    async with gw:
        batches = await watcher.batches(4)
    seqs = [b.seq for b in batches]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert all((b.site, b.gateway, b.historical) == (*names, False) for b in batches)
    points = [p for b in batches for p in b.points]
    assert {p.tag for p in points} >= {"flow", "bearing_temp", "vibration", "status"}
    assert all(p.device == "pump-1" and p.quality == Quality.GOOD for p in points)
    assert all(abs(p.ts - time.time() * 1000) < 10_000 for p in points)
    assert gw.stats.device_online == {"pump-1": True}
    assert gw.stats.batches_published >= 4


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_birth_is_retained_online_and_clean_stop_is_offline_shutdown(
    protocol: str, names: tuple[str, str], sim: PumpModbusServer, tmp_path: Path
) -> None:
    """A late subscriber sees the retained 'online'; after stop() the retained status is 'offline'/'shutdown'."""
    gw = Gateway(parse_config(config_data(names, tmp_path, pump(sim.port))), MQTT_URL, protocol)
    status = topic(*names, "status")
    await gw.start()
    await gw.wait_connected()
    await asyncio.sleep(0.2)
    late = Watcher(status)
    try:
        _, _, retained = await late.next(is_status("online", "connected"))
        assert retained
    finally:
        late.close()
    await gw.stop()
    await gw.stop()
    after = Watcher(status)
    try:
        _, _, retained = await after.next(is_status("offline", "shutdown"))
        assert retained
    finally:
        after.client.publish(status, b"", retain=True).wait_for_publish(2)  # leave no retained litter
        after.close()


async def test_sequence_continues_after_a_restart(
    names: tuple[str, str], sim: PumpModbusServer, watcher: Watcher, tmp_path: Path
) -> None:
    """A restarted gateway with the same state dir continues the sequence instead of reusing numbers
    (and replays its unacknowledged batches from disk as historical)."""
    config = parse_config(config_data(names, tmp_path, pump(sim.port)))
    async with Gateway(config, MQTT_URL) as first:
        await watcher.batches(2)
    last = first.stats.last_seq
    while not watcher.messages.empty():
        watcher.messages.get_nowait()
    async with Gateway(config, MQTT_URL):
        _, payload, _ = await watcher.next(lambda t, p, r: t.endswith("/telemetry") and b'"historical":false' in p)
    assert decode_batch(payload).seq == last + 1


async def test_a_dead_device_does_not_delay_the_others(
    names: tuple[str, str], sim: PumpModbusServer, watcher: Watcher, tmp_path: Path
) -> None:
    """A device that never answers is reported once with BAD_TIMEOUT while the live pump keeps its pace."""

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(-1)  # accept, read, never answer

    blackhole = await asyncio.start_server(silent, "127.0.0.1", 0)
    dead_port = blackhole.sockets[0].getsockname()[1]
    data = config_data(names, tmp_path, pump(sim.port), pump(dead_port, "dead", timeout=1.0))
    gw = Gateway(parse_config(data), MQTT_URL)
    try:
        async with gw:
            started = time.monotonic()
            batches = await watcher.batches(6)
            elapsed = time.monotonic() - started
    finally:
        blackhole.close()
        for writer in writers:
            writer.close()
        await blackhole.wait_closed()
    live = [b for b in batches if any(p.device == "pump-1" for p in b.points)]
    assert len(live) >= 5
    assert elapsed < 6 * POLL + 1.5
    dead_points = [p for b in batches for p in b.points if p.device == "dead"]
    assert dead_points and {p.quality for p in dead_points} == {Quality.BAD_TIMEOUT}
    assert len(dead_points) == len({p.tag for p in dead_points})  # reported once, not every poll
    assert gw.stats.device_online == {"pump-1": True, "dead": False}
    assert "dead" in gw.stats.device_errors


async def test_acks_release_batches_and_unacked_ones_are_replayed_after_a_broken_connection(
    names: tuple[str, str], sim: PumpModbusServer, watcher: Watcher, tmp_path: Path
) -> None:
    """Acked batches are forgotten; when the socket dies uncleanly the Will says 'offline',
    and after reconnecting the gateway says 'online' again and replays only unacked batches as historical
    (PUBACKed ones once the replay grace passes without an ack)."""
    gw = Gateway(parse_config(config_data(names, tmp_path, pump(sim.port))), MQTT_URL)
    async with gw:
        batches = await watcher.batches(3)
        acked = [b.seq for b in batches[:2]]
        ack = watcher.client.publish(topic(*names, "ack"), encode_ack(acked, ts=0), qos=1)
        ack.wait_for_publish(2)
        for _ in range(50):
            if gw.stats.batches_acked == 2:
                break
            await asyncio.sleep(0.05)
        assert gw.stats.batches_acked == 2
        held = gw.stats.unacked

        assert gw.publisher is not None
        gw.publisher.client.socket().shutdown(socket.SHUT_RDWR)  # die without DISCONNECT
        await watcher.next(is_status("offline", "connection lost"))
        await watcher.next(is_status("online"), timeout=8)
        replayed: list[Batch] = []
        while batches[2].seq not in {b.seq for b in replayed}:  # after replay_grace (2 s) at the latest
            _, p, _ = await watcher.next(
                lambda t, p, r: t.endswith("/telemetry") and b'"historical":true' in p, timeout=8
            )
            replayed.append(decode_batch(p))
    assert all(b.historical for b in replayed)
    assert not set(acked) & {b.seq for b in replayed}
    assert gw.stats.batches_republished >= held >= 1


async def test_sigkilled_gateway_process_leaves_a_retained_offline_will(
    names: tuple[str, str], sim: PumpModbusServer, watcher: Watcher, tmp_path: Path
) -> None:
    """`fieldwatch gateway run` killed with SIGKILL is announced 'offline' by the broker's Last Will."""
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config_data(names, tmp_path, pump(sim.port))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", str(path), "--mqtt-url", MQTT_URL, "--mqtt-protocol", "3.1.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await watcher.next(is_status("online"), timeout=15)
        await watcher.batches(1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    _, _, _ = await watcher.next(is_status("offline", "connection lost"))
    late = Watcher(topic(*names, "status"))
    try:
        _, _, retained = await late.next(is_status("offline"))
        assert retained
    finally:
        late.client.publish(topic(*names, "status"), b"", retain=True).wait_for_publish(2)
        late.close()
