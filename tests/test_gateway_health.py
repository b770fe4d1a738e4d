"""Health on the health topic, Prometheus metrics, per-device status and report-by-exception, on the real broker."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson

from fwcore.contract import decode_batch, topic
from gateway import Gateway, parse_config
from gateway.health import BufferHealth, DeviceHealth, HealthSnapshot, health_payload
from simulators import PumpModbusServer
from tests.support import gateways
from tests.support.gateways import config_data, pump
from tests.support.mqtt import MQTT_URL, Watcher
from tests.support.ports import closed_port
from tests.support.waits import wait_until_async

names, sim, watcher = gateways.names, gateways.sim, gateways.watcher  # the fixtures, shared with test_gateway_mqtt

PUMP_TAGS = ("flow", "discharge_pressure", "motor_current", "bearing_temp", "vibration", "status", "run_hours")


def test_health_payload_reports_devices_buffer_and_overruns() -> None:
    """The health object carries per-device latency/overruns/reconnects and the buffer's depth and oldest age."""
    d = DeviceHealth(online=True, connects=3)
    d.record_poll(0.004, 1.0)
    d.record_poll(1.5, 1.0)
    snap = HealthSnapshot("gw", "site", 1000, 12.0, True, 2, 10, 4, BufferHealth(3, 300, 7.5, 1, 9), {"p": d})
    obj = health_payload(snap)
    assert obj["devices"]["p"] == {
        "online": True,
        "error": "",
        "polls": 2,
        "poll_latency_ms": 1500.0,
        "poll_latency_avg_ms": 752.0,
        "overruns": 1,
        "reconnects": 2,
    }
    assert obj["buffer"]["oldest_unacked_age_s"] == 7.5 and obj["buffer"]["depth"] == 3
    assert obj["mqtt"] == {"connected": True, "reconnects": 2}
    assert obj["points"] == {"buffered": 0, "published": 10, "suppressed": 4}


async def test_health_metrics_and_device_status(
    names: tuple[str, str],
    sim: PumpModbusServer,
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    """A dead device is offline in the retained status, in health and in /metrics, while the live one is online."""
    data = config_data(names, tmp_path, pump(sim.port), pump(closed_port(), name="dead"))
    data["health_interval"] = 0.3
    gw = Gateway(parse_config(data), MQTT_URL, metrics_port=0)
    async with gw:
        health: dict = {}
        status: dict = {}

        def wanted(t: str, p: bytes, r: bool) -> bool:
            obj = orjson.loads(p)
            if t.endswith("/health") and obj["devices"]["pump-1"]["polls"] > 0:
                health.update(obj)
            if t.endswith("/status") and obj.get("devices", {}).get("pump-1") == "online":
                status.update(obj)
            return bool(health and status)

        await watcher.next(wanted, timeout=8)
        body = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).read().decode()
    assert health["devices"]["dead"]["online"] is False and "dead" in health["devices"]["dead"]["error"]
    assert health["devices"]["pump-1"]["online"] is True and health["devices"]["pump-1"]["poll_latency_ms"] > 0
    assert status["devices"] == {"pump-1": "online", "dead": "offline"}
    assert f'fieldwatch_gateway_device_online{{device="pump-1",gateway="{names[1]}",site="{names[0]}"}} 1.0' in body
    assert f'fieldwatch_gateway_device_online{{device="dead",gateway="{names[1]}",site="{names[0]}"}} 0.0' in body
    assert "fieldwatch_gateway_poll_seconds_count" in body and "fieldwatch_gateway_buffer_batches" in body
    assert gw.stats.devices["dead"].failures >= 1


async def test_report_by_exception_sends_each_steady_tag_once(
    names: tuple[str, str],
    sim: PumpModbusServer,
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    """With a wide deadband and no heartbeat, each tag is published once and later polls are counted as suppressed."""
    wide = {tag: {"deadband": 1e9} for tag in PUMP_TAGS}
    gw = Gateway(parse_config(config_data(names, tmp_path, pump(sim.port, overrides=wide))), MQTT_URL)
    async with gw:
        await watcher.batches(1)
        polls = gw.stats.devices["pump-1"].polls
        await wait_until_async(lambda: gw.stats.devices["pump-1"].polls >= polls + 5, what="five more polls")
    seen = []
    while not watcher.messages.empty():
        t, p, _ = watcher.messages.get_nowait()
        if t == topic(*names, "telemetry"):
            seen += [pt.tag for pt in decode_batch(p).points]
    assert seen.count("flow") == 0  # all sent in the first batch, already consumed
    assert "fault_code" in seen  # no deadband: sent every poll
    assert gw.stats.points_suppressed >= 4 * len(PUMP_TAGS)
