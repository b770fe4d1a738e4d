"""OPC-UA devices against the real pump simulator server over TCP and the real Mosquitto."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from fwcore.contract import Point, Quality, decode_batch, topic
from gateway import Gateway, parse_config
from gateway.opcua import OpcUaDriver, quality_of
from simulators import PumpModel
from simulators.opcua_server import PumpOpcUaServer
from tests.support.mqtt import Watcher
from tests.support.ports import free_port
from tests.support.waits import wait_until_async


@pytest.fixture
async def sim() -> AsyncIterator[PumpOpcUaServer]:
    server = PumpOpcUaServer("127.0.0.1", free_port(), {"pump-1": PumpModel(seed=1)}, update_interval=0.1)
    await server.start()
    yield server
    await server.stop()


def _config(uid: str, tmp_path: Path, sim: PumpOpcUaServer, **device: Any) -> Any:
    dev = {
        "name": "pump-1",
        "protocol": "opcua",
        "endpoint": sim.endpoint,
        "root": "2:pump-1",
        "profile": "pump-p100-opcua",
        "publishing_interval": 0.1,
        "keepalive_count": 5,
        "timeout": 1.0,
        **device,
    }
    return parse_config(
        {
            "gateway": f"gw-{uid}",
            "site": f"site-{uid}",
            "poll_interval": 0.2,
            "state_dir": str(tmp_path),
            "devices": [dev],
        }
    )


async def _points(watcher: Watcher, match: Callable[[Point], bool], n: int, timeout: float) -> list[Point]:
    """Collect ``n`` points matching ``match`` from telemetry batches."""
    got: list[Point] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {n} matching points within {timeout}s"
        _, payload, _ = await watcher.next(lambda t, p, r: t.endswith("/telemetry"), left)
        got += [p for p in decode_batch(payload).points if match(p)]
    return got


def test_status_codes_map_to_quality() -> None:
    """Good, uncertain and the bad families of OPC-UA StatusCodes map to the contract's qualities."""
    s = ua.StatusCodes
    assert quality_of(s.Good) == Quality.GOOD
    assert quality_of(s.UncertainLastUsableValue) == Quality.UNCERTAIN
    assert quality_of(s.BadTimeout) == Quality.BAD_TIMEOUT
    assert quality_of(s.BadNotConnected) == Quality.BAD_NOT_CONNECTED
    assert quality_of(s.BadNodeIdUnknown) == Quality.BAD_EXCEPTION
    assert quality_of(s.BadOutOfRange) == Quality.BAD_OUT_OF_RANGE
    assert quality_of(s.BadSensorFailure) == Quality.BAD


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_values_flow_with_source_timestamps(
    sim: PumpOpcUaServer, mqtt_url: str, uid: str, tmp_path: Path, mode: str
) -> None:
    """Every profile tag arrives over MQTT with the simulator's source timestamp, in both modes."""
    cfg = _config(uid, tmp_path, sim, mode=mode)
    watcher = Watcher(topic(cfg.site, cfg.gateway, "telemetry"))
    try:
        async with Gateway(cfg, mqtt_url=mqtt_url) as gw:
            await gw.wait_connected()
            pts = await _points(watcher, lambda p: p.tag == "bearing_temp", 3, 10.0)
            seen = {p.tag for p in await _points(watcher, lambda p: True, 20, 5.0)}
    finally:
        watcher.close()
    assert {"flow", "bearing_temp", "vibration"} <= seen | {p.tag for p in pts}
    assert all(p.quality == Quality.GOOD for p in pts)
    assert all(40 < p.value < 80 for p in pts)
    # The simulator stamps values on its 0.1 s update grid, not on the gateway's 0.2 s poll grid.
    assert any(p.ts % 200 != 0 for p in pts)
    assert all(abs(p.ts - time.time() * 1000) < 15_000 for p in pts)


async def test_bad_status_and_fault_injection(sim: PumpOpcUaServer, uid: str, tmp_path: Path) -> None:
    """A variable with a bad StatusCode reads bad; the fault_rate variable heats the simulated bearing."""
    cfg = _config(uid, tmp_path, sim, mode="poll")
    driver = OpcUaDriver(cfg.devices[0])
    await driver.connect()
    try:
        sim.set_status("pump-1", "vibration", ua.StatusCodes.BadSensorFailure)
        sim.set_status("pump-1", "flow", ua.StatusCodes.BadOutOfRange)

        async def by_tag_now() -> dict[str, Any]:
            return {v.tag.name: v for v in await driver.poll()}

        by_tag = await wait_until_async(
            by_tag_now, done=lambda t: t["vibration"].quality != Quality.GOOD, what="the next update with the statuses"
        )
        assert by_tag["vibration"].quality == Quality.BAD
        assert by_tag["flow"].quality == Quality.BAD_OUT_OF_RANGE
        assert by_tag["bearing_temp"].quality == Quality.GOOD
        rate = next(n for t, n in driver._nodes if t.name == "fault_rate")
        await rate.write_value(ua.Variant(3.0, ua.VariantType.Double))
        await wait_until_async(lambda: sim.devices["pump-1"].fault, what="the next update to read the rate")
        assert sim.devices["pump-1"].fault == "bearing_wear"
        by_tag = {v.tag.name: v for v in await driver.poll()}
        assert by_tag["fault_rate"].value == 3.0
    finally:
        await driver.close()


async def test_refused_subscription_falls_back_to_polling(uid: str, tmp_path: Path) -> None:
    """A server that refuses subscriptions is polled instead, and values still arrive."""
    server = PumpOpcUaServer("127.0.0.1", free_port(), {"pump-1": PumpModel(seed=2)}, max_subscriptions=0)
    await server.start()
    driver = OpcUaDriver(_config(uid, tmp_path, server, mode="subscribe").devices[0])
    try:
        await driver.connect()
        assert driver.mode == "poll"
        values = await driver.poll()
        assert len(values) == 8 and all(v.quality == Quality.GOOD for v in values)
    finally:
        await driver.close()
        await server.stop()


async def test_watchdog_recreates_a_silent_subscription(sim: PumpOpcUaServer, uid: str, tmp_path: Path) -> None:
    """When the server forgets the subscription, the watchdog re-creates it and changes flow again."""
    driver = OpcUaDriver(_config(uid, tmp_path, sim, publishing_interval=0.1, keepalive_count=3).devices[0])
    await driver.connect()
    try:
        assert await wait_until_async(driver.poll, 5, what="the subscription's first values")
        assert await sim.drop_subscriptions() == 1

        async def resubscribed() -> int:
            await driver.poll()  # the watchdog runs inside poll
            return driver.resubscribes

        await wait_until_async(resubscribed, 10, what="the watchdog to re-create the subscription", interval=0.2)
        got = await wait_until_async(driver.poll, 5, done=lambda vs: any(v.tag.name == "flow" for v in vs))
        assert any(v.tag.name == "flow" for v in got)
    finally:
        await driver.close()


async def test_a_recreated_subscription_does_not_send_steady_values_twice(uid: str, tmp_path: Path) -> None:
    """Steady values the server re-sends to a re-created subscription (same source timestamp) are queued once."""
    server = PumpOpcUaServer("127.0.0.1", free_port(), {"pump-1": PumpModel(seed=4)}, update_interval=3600.0)
    await server.start()  # one physics update, then nothing changes
    driver = OpcUaDriver(_config(uid, tmp_path, server, publishing_interval=0.1, keepalive_count=3).devices[0])
    got: list[Any] = []

    async def collect() -> int:
        got.extend(await driver.poll())  # the watchdog runs inside poll
        return driver.resubscribes

    try:
        await driver.connect()
        await wait_until_async(
            lambda: collect(), 5, done=lambda _: len(got) >= 8, what="every tag's first value", interval=0.1
        )
        assert await server.drop_subscriptions() == 1
        await wait_until_async(collect, 10, what="the watchdog to re-create the subscription", interval=0.2)
        for _ in range(10):  # 1 s: the new subscription's first publish (every current value) arrives
            await collect()
            await asyncio.sleep(0.1)
    finally:
        await driver.close()
        await server.stop()
    assert Counter(v.tag.name for v in got) == {t.name: 1 for t in driver.device.tags}
    assert driver.repeats == 8


async def test_server_restart_values_flow_again(sim: PumpOpcUaServer, mqtt_url: str, uid: str, tmp_path: Path) -> None:
    """The OPC-UA server stops and starts again on the same port: the gateway reconnects and values flow."""
    cfg = _config(uid, tmp_path, sim)
    watcher = Watcher(topic(cfg.site, cfg.gateway, "telemetry"))
    try:
        async with Gateway(cfg, mqtt_url=mqtt_url) as gw:
            await gw.wait_connected()
            await _points(watcher, lambda p: p.tag == "flow" and p.quality == Quality.GOOD, 2, 10.0)
            await sim.stop()
            bad = await _points(watcher, lambda p: p.tag == "flow" and p.quality != Quality.GOOD, 1, 15.0)
            assert bad[0].quality == Quality.BAD_NOT_CONNECTED
            assert gw.stats.device_online["pump-1"] is False
            await sim.start()
            restarted = time.time() * 1000
            good = await _points(
                watcher, lambda p: p.tag == "flow" and p.quality == Quality.GOOD and p.ts > restarted, 2, 30.0
            )
            assert good and gw.stats.device_online["pump-1"] is True
    finally:
        watcher.close()
