"""The gateway against the real Mosquitto: contract payloads, sequence, status birth/death, acks."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import yaml

from fwcore.contract import Batch, Quality, decode_batch, encode_ack, topic
from gateway import Gateway, parse_config
from simulators import PumpModbusServer
from tests.support import gateways
from tests.support.gateways import POLL, config_data, pump
from tests.support.mqtt import MQTT_URL, Watcher
from tests.support.waits import wait_until_async

names, sim, watcher = gateways.names, gateways.sim, gateways.watcher  # the fixtures, shared with test_gateway_health


def is_status(state: str, reason: str | None = None) -> Callable[[str, bytes, bool], bool]:
    def match(t: str, p: bytes, r: bool) -> bool:
        if not t.endswith("/status") or not p:  # an empty payload clears a retained status: not a status
            return False
        obj = orjson.loads(p)
        return obj["state"] == state and (reason is None or obj["reason"] == reason)

    return match


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
    early = Watcher(status)
    try:
        await early.wait_subscribed()
        await gw.start()
        await gw.wait_connected()
        await early.next(is_status("online", "connected"))  # forwarded, so the broker has retained it
    finally:
        early.close()
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
        await wait_until_async(lambda: gw.stats.batches_acked == 2, 2.5, observe=lambda: gw.stats.batches_acked)
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
