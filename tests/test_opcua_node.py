"""The OPC-UA driver against a second server implementation: node-opcua (tests/opcua_js), not our asyncua simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua

from fwcore.contract import Quality, decode_batch, topic
from gateway import Gateway, opcua, parse_config
from gateway.config import GatewayConfig, OpcUaDevice
from gateway.opcua import OpcUaDriver
from simulators import PumpModbusServer, PumpModel
from tests.support import opcua_node
from tests.support.mqtt import Watcher
from tests.support.opcua_node import NodeOpcUaServer, start_or_skip
from tests.support.waits import wait_until, wait_until_async

node_opcua = opcua_node.node_opcua  # the fixture: one server for the module

STEADY = [f"steady_{i}" for i in range(1, 6)]
#: A server granting nothing faster than 0.5 s: a 0.1 s request is revised to it.
SLOW_PUBLISHING_MS = 500


@pytest.fixture(scope="module")
def slow_node_opcua(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeOpcUaServer]:
    server = start_or_skip(tmp_path_factory.mktemp("node-opcua-slow"), min_publishing_ms=SLOW_PUBLISHING_MS)
    try:
        yield server
    finally:
        server.stop()


def _config(
    uid: str, tmp_path: Path, server: NodeOpcUaServer, tags: list[dict[str, Any]], **device: Any
) -> GatewayConfig:
    dev = {
        "name": "plant-1",
        "protocol": "opcua",
        "endpoint": server.endpoint,
        "publishing_interval": 0.1,
        "keepalive_count": 3,
        "timeout": 2.0,
        "tags": tags,
        **device,
    }
    names = {"gateway": f"gw-{uid}", "site": f"site-{uid}"}
    return parse_config({**names, "poll_interval": 0.2, "state_dir": str(tmp_path), "devices": [dev]})


def _device(uid: str, tmp_path: Path, server: NodeOpcUaServer, tags: list[dict[str, Any]], **kw: Any) -> OpcUaDevice:
    device = _config(uid, tmp_path, server, tags, **kw).devices[0]
    assert isinstance(device, OpcUaDevice)
    return device


async def _subscriptions_created(server: NodeOpcUaServer) -> int:
    """The server's own count of every subscription ever created (its diagnostics summary)."""
    client = Client(server.endpoint, timeout=5)
    async with client:
        node = client.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary_CumulatedSubscriptionCount)
        )
        return int(await node.read_value())


async def test_steady_tags_are_sent_once_on_one_subscription(
    slow_node_opcua: NodeOpcUaServer, mqtt_url: str, uid: str, tmp_path: Path
) -> None:
    """Five steady tags on a server that revises the publishing interval: one subscription, each tag sent once."""
    server = slow_node_opcua
    cfg = _config(uid, tmp_path, server, [{"name": n, "node": server.node(n)} for n in STEADY])
    before = await _subscriptions_created(server)
    watcher = Watcher(topic(cfg.site, cfg.gateway, "telemetry"))
    sent: Counter[str] = Counter()

    def drain() -> int:
        while not watcher.messages.empty():
            sent.update(p.tag for p in decode_batch(watcher.messages.get_nowait()[1]).points)
        return sum(sent.values())

    try:
        async with Gateway(cfg, mqtt_url=mqtt_url) as gw:
            await gw.wait_connected()
            await wait_until_async(drain, 10, done=lambda n: n >= len(STEADY), what="the first value of each tag")
            # Quiet on purpose: 8 s are 5 keep-alive periods of the revised 0.5 s x 3, and 8 of the
            # 1 s silence limit the requested 0.1 s x 3 gave (the old watchdog re-subscribed each time).
            await asyncio.sleep(8.0)
            assert gw.stats.device_online["plant-1"]
            wait_until(drain, 5, done=lambda n: n >= gw.stats.points_published, what="every published point")
    finally:
        watcher.close()
    assert sent == {n: 1 for n in STEADY}
    assert await _subscriptions_created(server) - before == 1


async def test_the_watchdog_watches_the_terms_the_server_revised(
    slow_node_opcua: NodeOpcUaServer, uid: str, tmp_path: Path
) -> None:
    """The keep-alive and lifetime are requested, and the silence limit follows the server's revised interval."""
    server = slow_node_opcua
    driver = OpcUaDriver(_device(uid, tmp_path, server, [{"name": "s1", "node": server.node("steady_1")}]))
    await driver.connect()
    try:
        assert driver.terms == opcua.SubscriptionTerms(publishing_interval=0.5, keepalive_count=3, lifetime_count=30)
        assert driver.silence_limit == pytest.approx(0.5 * 3 * 1.5)
    finally:
        await driver.close()


async def test_two_tags_on_one_node_are_both_published(node_opcua: NodeOpcUaServer, uid: str, tmp_path: Path) -> None:
    """Two tags reading the same NodeId in subscribe mode each get their own value, once."""
    node = node_opcua.node("steady_2")
    tags = [{"name": "raw", "node": node}, {"name": "scaled", "node": node, "scale": 10.0}]
    driver = OpcUaDriver(_device(uid, tmp_path, node_opcua, tags))
    await driver.connect()
    got: list[Any] = []
    try:

        async def collect() -> set[str]:
            got.extend(await driver.poll())
            return {v.tag.name for v in got}

        await wait_until_async(collect, 10, done=lambda names: names == {"raw", "scaled"}, what="both tags")
        await asyncio.sleep(1.0)  # a second notification for one of them would arrive within this
        await collect()
    finally:
        await driver.close()
    assert sorted((v.tag.name, v.value) for v in got) == [("raw", 2.5), ("scaled", 25.0)]


@pytest.mark.parametrize(
    ("mode", "address", "status"),
    [
        ("subscribe", {"node": "ns=1;s=no_such_node"}, "BadNodeIdUnknown"),
        ("poll", {"node": "ns=1;s=no_such_node"}, "BadNodeIdUnknown"),
        ("subscribe", {"path": "1:plant/1:no_such_node"}, "BadNoMatch"),
    ],
)
async def test_an_unknown_node_is_a_bad_point_and_one_log_line(
    node_opcua: NodeOpcUaServer,
    uid: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    address: dict[str, str],
    status: str,
) -> None:
    """A node the server does not have reads quality 4 (subscribed: once per connection) and logs one line."""
    caplog.set_level(logging.INFO)
    tags = [{"name": "known", "node": node_opcua.node("steady_1")}, {"name": "ghost", **address}]
    driver = OpcUaDriver(_device(uid, tmp_path, node_opcua, tags, mode=mode))
    await driver.connect()
    got: list[Any] = []
    try:

        async def collect() -> set[str]:
            got.extend(await driver.poll())
            return {v.tag.name for v in got}

        await wait_until_async(collect, 10, done=lambda names: names == {"known", "ghost"}, what="both tags")
        await collect()
    finally:
        await driver.close()
    ghost = [(v.value, v.quality) for v in got if v.tag.name == "ghost"]
    if mode == "subscribe":  # a monitored item the server refused: reported once, not every poll
        assert ghost == [(0.0, Quality.BAD_EXCEPTION)]
    else:  # read every poll, bad every poll
        assert len(ghost) >= 2 and set(ghost) == {(0.0, Quality.BAD_EXCEPTION)}
    assert driver.statuses["ghost"] == status
    lines = [r.getMessage() for r in caplog.records if "cannot find node" in r.getMessage()]
    assert len(lines) == 1 and "'ghost'" in lines[0] and status in lines[0], lines


async def test_a_server_that_goes_away_logs_one_line_and_no_traceback(
    tmp_path: Path, mqtt_url: str, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncua's records are DEBUG details; the gateway says connected and lost in one line each, no traceback."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="asyncua")  # `gateway check` in this process may have raised it
    server = start_or_skip(tmp_path)
    try:
        cfg = _config(uid, tmp_path, server, [{"name": "ramp", "node": server.node("ramp")}])
        async with Gateway(cfg, mqtt_url=mqtt_url) as gw:
            await gw.wait_connected()
            await wait_until_async(lambda: gw.stats.device_online["plant-1"], 10, what="the device online")
            await asyncio.sleep(1.0)  # a few publish cycles: asyncua logs every one of them
            server.kill()
            await wait_until_async(lambda: not gw.stats.device_online["plant-1"], 10, what="the device offline")
            await asyncio.sleep(2.0)  # reconnect attempts with backoff
    finally:
        server.stop()
    library = [r for r in caplog.records if r.name.startswith("asyncua")]
    assert library, "asyncua's records should still be there at DEBUG"
    loud = [(r.name, r.levelname, r.getMessage()[:100]) for r in library if r.levelno > logging.DEBUG]
    assert loud == []
    tracebacks = [(r.name, r.getMessage()[:100]) for r in caplog.records if r.exc_info and r.levelno > logging.DEBUG]
    assert tracebacks == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("gateway") and "plant-1" in r.getMessage()]
    connected = [m for m in ours if "connected to" in m]
    lost = [m for m in ours if "retrying with backoff" in m]
    assert len(connected) == 1 and server.endpoint in connected[0], ours
    assert len(lost) == 1, ours


#: Scripts run in a fresh interpreter (asyncua not yet imported), after an audit hook that
#: prints to stderr, at exit, whether asyncua was imported on the running event loop or off it.
_AUDIT = """
import asyncio, atexit, sys
where = []
def hook(event, args):
    if event == "import" and args[0] == "asyncua":
        try:
            asyncio.get_running_loop()
            where.append("on the loop")
        except RuntimeError:
            where.append("off the loop")
sys.addaudithook(hook)
atexit.register(lambda: print(where, file=sys.stderr))
"""

#: ``fieldwatch gateway check --json`` of the config.
_CHECK_PROBE = (
    _AUDIT
    + """
from gateway.cli import app
app(["check", "--config", sys.argv[1], "--json"])
"""
)

#: A gateway running the config until every device is online (10 s at most); prints its device stats.
_RUN_PROBE = (
    _AUDIT
    + """
import json, time
from gateway import Gateway, load_config
async def main():
    async with Gateway(load_config(sys.argv[1])) as gw:
        deadline = time.monotonic() + 10
        while not all(gw.stats.device_online.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        failures = {n: d.failures for n, d in gw.stats.devices.items()}
        print(json.dumps({"online": gw.stats.device_online, "errors": gw.stats.device_errors, "failures": failures}))
asyncio.run(main())
"""
)


async def _probe(script: str, config: Path) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode(), err.decode()


def _mixed_config(tmp_path: Path, uid: str, node_opcua: NodeOpcUaServer, modbus_port: int, mqtt_url: str) -> Path:
    cfg = {
        "gateway": f"gw-{uid}",
        "site": f"site-{uid}",
        "mqtt_url": mqtt_url,
        "poll_interval": 0.2,
        "state_dir": str(tmp_path),
        "devices": [
            {"name": "pump-1", "host": "127.0.0.1", "port": modbus_port, "unit_id": 1, "profile": "pump-p100",
             "timeout": 0.2},
            {"name": "plant-1", "protocol": "opcua", "endpoint": node_opcua.endpoint, "timeout": 2.0,
             "tags": [{"name": "s1", "node": node_opcua.node("steady_1")}]},
        ],
    }  # fmt: skip
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_opcua_is_imported_off_the_loop_so_modbus_check_latency_is_right(
    node_opcua: NodeOpcUaServer, uid: str, tmp_path: Path, mqtt_url: str
) -> None:
    """`gateway check` of Modbus + OPC-UA in a fresh process: asyncua loads off the loop; Modbus latency is its own."""
    modbus = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1)}, update_interval=3600)
    await modbus.start()
    try:
        out, err = await _probe(_CHECK_PROBE, _mixed_config(tmp_path, uid, node_opcua, modbus.port, mqtt_url))
    finally:
        await modbus.stop()
    devices = {d["device"]: d for d in json.loads(out)["devices"]}
    assert devices["pump-1"]["online"] and devices["plant-1"]["online"], out
    assert devices["pump-1"]["latency_s"] < 0.15, devices["pump-1"]  # ~5 ms; importing asyncua takes 0.2-2 s
    assert "['off the loop']" in err, err


async def test_opcua_is_imported_off_the_loop_so_modbus_sees_no_false_errors(
    node_opcua: NodeOpcUaServer, uid: str, tmp_path: Path, mqtt_url: str
) -> None:
    """A gateway of Modbus + OPC-UA devices in a fresh process: asyncua loads off the loop; no Modbus error at start."""
    modbus = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1)}, update_interval=3600)
    await modbus.start()
    try:
        out, err = await _probe(_RUN_PROBE, _mixed_config(tmp_path, uid, node_opcua, modbus.port, mqtt_url))
    finally:
        await modbus.stop()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["online"] == {"pump-1": True, "plant-1": True}, result
    assert result["failures"] == {"pump-1": 0, "plant-1": 0}, (result, err)
    assert "['off the loop']" in err, err
