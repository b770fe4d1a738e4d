"""Store-and-forward under real faults: our own Mosquitto stopped and restarted, a gateway SIGKILLed.

The broker here is a private ``mosquitto`` subprocess on a port of its own (the shared
one must never be stopped). An :class:`~tests.support.acker.Acker` plays ingest: it records
each batch and acks its seq on the ack topic, as ingest does after commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fwcore.contract import Batch, decode_batch
from gateway import Gateway, parse_config
from simulators import PumpModbusServer, PumpModel
from tests.support.acker import Acker
from tests.support.brokers import PrivateMosquitto
from tests.support.waits import wait_until_async

POLL = 0.2


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A broker of our own that the test may stop and start again on the same port."""
    with PrivateMosquitto(workdir=tmp_path / "broker") as b:
        yield b


@pytest.fixture
async def sim() -> AsyncIterator[PumpModbusServer]:
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=3)}, update_interval=0.05)
    await server.start()
    yield server
    await server.stop()


def config(uid: str, state_dir: Path, sim_port: int, broker_url: str) -> dict[str, Any]:
    return {
        "site": f"site-{uid[:8]}",
        "gateway": f"gw-{uid[:8]}",
        "mqtt_url": broker_url,
        "poll_interval": POLL,
        "state_dir": str(state_dir),
        "buffer": {"replay_grace": 0.5, "replay_rate": 50},
        "devices": [{"name": "pump-1", "host": "127.0.0.1", "port": sim_port, "profile": "pump-p100"}],
    }


def assert_each_point_once(batches: list[Batch]) -> None:
    by_seq: dict[int, Batch] = {}
    for b in batches:
        by_seq.setdefault(b.seq, b)
    points = [(p.device, p.tag, p.ts) for b in by_seq.values() for p in b.points]
    assert len(points) == len(set(points)), "a point travelled in two different batches"


async def test_broker_outage_loses_nothing_and_replays_backlog_as_historical(
    broker: PrivateMosquitto, sim: PumpModbusServer, uid: str, tmp_path: Path
) -> None:
    """With the broker down for 2 s every batch still reaches the subscriber (backlog marked historical),
    each point in exactly one batch, and the disk buffer empties once everything is acked."""
    cfg = parse_config(config(uid, tmp_path, sim.port, broker.url))
    acker = Acker(broker.port, cfg.site, cfg.gateway)
    gw = Gateway(cfg)
    try:
        async with gw:
            await gw.wait_connected()
            await wait_until_async(lambda: len(acker.seqs()) >= 3, 10, what="live batches before the outage")
            broker.stop()
            await wait_until_async(lambda: not gw.stats.mqtt_connected, 10, what="the gateway to notice the outage")
            # Time must pass: a 2 s outage is the case under test (shorter ones race the subscriber's reconnect).
            await asyncio.sleep(2.0)
            assert gw.stats.unacked >= 5  # polled during the outage, held on disk
            broker.start()
            await gw.wait_connected(15)
            target = gw.stats.last_seq
            await wait_until_async(
                lambda: acker.seqs() >= set(range(1, target + 1)), 20, what=f"every seq up to {target}"
            )
            await wait_until_async(lambda: gw.stats.unacked <= 2, 10, what="acks to empty the buffer")
            assert gw.stats.batches_dropped == 0
    finally:
        acker.close()
    batches = acker.drain()
    historical = {b.seq for b in batches if b.historical}
    assert historical, "the outage backlog must be replayed as historical"
    assert set(range(1, target + 1)) <= {b.seq for b in batches}
    assert_each_point_once(batches)


async def test_points_buffered_during_an_outage_are_not_counted_as_published(
    broker: PrivateMosquitto, sim: PumpModbusServer, uid: str, tmp_path: Path
) -> None:
    """While the broker is down every reading is counted as buffered and none as published, and the
    Prometheus help texts say exactly that."""
    gw = Gateway(parse_config(config(uid, tmp_path, sim.port, broker.url)))
    async with gw:
        await gw.wait_connected()
        await wait_until_async(lambda: gw.stats.points_published > 0, 10, what="live points")
        assert gw.stats.points_buffered >= gw.stats.points_published
        broker.stop()
        await wait_until_async(lambda: not gw.stats.mqtt_connected, 10, what="the gateway to notice the outage")
        published, buffered = gw.stats.points_published, gw.stats.points_buffered
        await wait_until_async(lambda: gw.stats.points_buffered >= buffered + 3 * 8, 10, what="points buffered offline")
        assert gw.stats.points_published == published
        metrics = {m.name: m for m in gw.registry.collect()}
    help_buffered = metrics["fieldwatch_gateway_points_buffered"].documentation
    help_published = metrics["fieldwatch_gateway_points_published"].documentation
    assert "disk buffer" in help_buffered
    assert "disk buffer" not in help_published and "connected" in help_published
    assert metrics["fieldwatch_gateway_points_published"].samples[0].value == published


def _run_gateway(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", str(path), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_sigkilled_gateway_delivers_its_unacked_batches_after_restart(
    broker: PrivateMosquitto, sim: PumpModbusServer, uid: str, tmp_path: Path
) -> None:
    """Batches a SIGKILLed gateway never got acked are on disk and delivered after it restarts."""
    data = config(uid, tmp_path, sim.port, broker.url)
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    silent = Acker(broker.port, data["site"], data["gateway"], ack=False)  # ingest is down: nothing acked
    proc = _run_gateway(path)
    try:
        await wait_until_async(lambda: len(silent.seqs()) >= 4, 20, what="batches from the first run")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        silent.close()
    unacked = silent.seqs()
    buffer_file = tmp_path / f"buffer-{data['site']}-{data['gateway']}.sqlite"
    assert unacked <= on_disk_seqs(buffer_file)

    acker = Acker(broker.port, data["site"], data["gateway"])
    proc = _run_gateway(path)
    try:
        await wait_until_async(lambda: acker.seqs() >= unacked, 20, what=f"replay of seqs {sorted(unacked)}")
        await wait_until_async(
            lambda: not unacked & on_disk_seqs(buffer_file), 10, what="acked batches to leave the disk"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        acker.close()
    replayed = [b for b in acker.drain() if b.seq in unacked]
    assert all(b.historical for b in replayed)


async def test_sigkilled_gateway_loses_at_most_the_readings_of_one_publish_interval(
    broker: PrivateMosquitto, sim: PumpModbusServer, uid: str, tmp_path: Path
) -> None:
    """Killed just before a publish tick (the worst moment), a gateway has on disk every reading polled
    up to one publish interval (plus one poll) before the kill, and none missing in between."""
    publish_interval = 1.0
    data = {**config(uid, tmp_path, sim.port, broker.url), "publish_interval": publish_interval}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    buffer_file = tmp_path / f"buffer-{data['site']}-{data['gateway']}.sqlite"
    proc = _run_gateway(path)
    try:
        await wait_until_async(
            lambda: len(on_disk_seqs(buffer_file)) >= 3,
            20,
            what="three batches on disk",
            ignore=(sqlite3.OperationalError,),  # the gateway has not created the file or its table yet
        )
        # Publish ticks fall at k * interval + interval / 2 (wall clock): kill 50 ms before the next one.
        now = time.time()
        tick = (int((now - publish_interval / 2) / publish_interval) + 1) * publish_interval + publish_interval / 2
        # The moment of the kill is what this test is about: time itself has to pass here.
        await asyncio.sleep(tick - 0.05 - now)
        killed_ms = time.time() * 1000
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    stamps = sorted(on_disk_point_times(buffer_file))
    assert killed_ms - stamps[-1] <= (publish_interval + POLL) * 1000 + 250
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) <= 2 * POLL * 1000, "a poll between the first and the last reading on disk is missing"


def on_disk_point_times(path: Path) -> set[int]:
    """The poll times (epoch ms) of every point in a gateway's buffer."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {p.ts for (payload,) in db.execute("SELECT payload FROM batches") for p in decode_batch(payload).points}


def on_disk_seqs(path: Path) -> set[int]:
    """Seqs in a live gateway's buffer (a WAL reader does not block the writer)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {r[0] for r in db.execute("SELECT seq FROM batches")}
