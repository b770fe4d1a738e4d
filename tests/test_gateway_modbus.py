"""The Modbus driver against the real pump simulator over TCP on a free port."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from fwcore.contract import Quality
from gateway import Gateway
from gateway.config import ModbusTcpDevice, Tag, parse_config
from gateway.errors import DeviceError, DeviceException, DeviceNotConnected, DeviceUnreachable, exception_error
from gateway.modbus import ModbusTcpDriver
from simulators import PumpModbusServer, PumpModel
from simulators.modbus_server import HR_FAULT_CODE
from tests.support.ports import closed_port
from tests.support.scripted_modbus import ScriptedServer, registers, reply
from tests.support.waits import wait_until_async


@pytest.fixture
async def sim() -> AsyncIterator[PumpModbusServer]:
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1), 2: PumpModel(seed=2)}, update_interval=0.05)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def pump_device(port: int, unit_id: int = 1, **kw: object) -> ModbusTcpDevice:
    config = parse_config(
        {
            "gateway": "gw",
            "site": "s",
            "devices": [{"name": f"pump-{unit_id}", "host": "127.0.0.1", "port": port, "unit_id": unit_id, **kw}],
        }
    )
    return config.devices[0]


async def poll_once(device: ModbusTcpDevice) -> dict[str, tuple[float, int]]:
    driver = ModbusTcpDriver(device)
    await driver.connect()
    try:
        return {v.tag.name: (v.value, v.quality) for v in await driver.poll()}
    finally:
        await driver.close()


async def test_port_zero_binds_a_free_port_and_stop_is_idempotent() -> None:
    """start() with port 0 exposes the real port; stop() twice is harmless."""
    server = PumpModbusServer(port=0)
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    assert server.port > 0
    await server.stop()
    await server.stop()


async def test_profile_poll_reads_plausible_pump_values(sim: PumpModbusServer) -> None:
    """Polling with the pump-p100 profile returns every tag with good quality near nominal values."""
    values = await poll_once(pump_device(sim.port, profile="pump-p100"))
    assert all(q == Quality.GOOD for _, q in values.values()), values
    assert 110 < values["flow"][0] < 130
    assert 5.5 < values["discharge_pressure"][0] < 6.5
    assert 55 < values["bearing_temp"][0] < 65
    assert values["status"][0] == 1  # running, no alarms
    assert 1_000 < values["run_hours"][0] < 30_000
    assert values["fault_code"][0] == 0


async def test_the_driver_coalesces_the_profile_into_two_reads(sim: PumpModbusServer) -> None:
    """All input tags come in one request and the holding tag in another."""
    plan = ModbusTcpDriver(pump_device(sim.port, profile="pump-p100")).plan
    assert [(r.register_type, r.address, r.count) for r in plan] == [("holding", 0, 1), ("input", 0, 13)]


async def test_units_on_one_port_are_distinct_pumps(sim: PumpModbusServer) -> None:
    """Unit ids 1 and 2 serve differently seeded pumps."""
    one = await poll_once(pump_device(sim.port, 1, profile="pump-p100"))
    two = await poll_once(pump_device(sim.port, 2, profile="pump-p100"))
    assert one["flow"] != two["flow"]


async def test_writing_the_fault_register_starts_bearing_wear(sim: PumpModbusServer) -> None:
    """Holding register 0 = 1 injects bearing wear remotely; the pump heats up and reports it."""
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
    await client.connect()
    try:
        assert not (await client.write_register(1, 500, device_id=1)).isError()  # 5 K/s: fast test
        assert not (await client.write_register(HR_FAULT_CODE, 1, device_id=1)).isError()
        refused = await client.write_register(HR_FAULT_CODE, 9, device_id=1)
        assert refused.isError()

        async def heated() -> list[int]:
            return (await client.read_input_registers(6, count=5, device_id=1)).registers

        regs = await wait_until_async(heated, done=lambda r: _bearing(r) > 62, what="the bearing to heat past 62 degC")
    finally:
        client.close()
    bearing = _bearing(regs)
    assert sim.pumps[1].fault == "bearing_wear"
    assert bearing > 62
    assert regs[4] & 0x0002  # status: fault active
    values = await poll_once(pump_device(sim.port, profile="pump-p100"))
    assert values["fault_code"] == (1.0, Quality.GOOD)


def _bearing(regs: list[int]) -> float:
    """Bearing temperature from input registers 6.. (a float32, high word first)."""
    return struct.unpack(">f", struct.pack(">HH", *regs[:2]))[0]


async def test_unknown_unit_is_a_device_that_failed_to_respond(sim: PumpModbusServer) -> None:
    """A unit id with no pump behind it answers 0x0B, as a serial gateway does: the device is gone, not one read."""
    driver = ModbusTcpDriver(pump_device(sim.port, 9, profile="pump-p100"))
    await driver.connect()
    try:
        with pytest.raises(DeviceUnreachable, match=r"pump-9.*gateway target device failed to respond") as info:
            await driver.poll()
    finally:
        await driver.close()
    assert info.value.code == 0x0B and info.value.quality == Quality.BAD_TIMEOUT


@pytest.mark.parametrize(
    ("code", "kind", "quality"),
    [
        (0x02, DeviceException, Quality.BAD_EXCEPTION),
        (0x04, DeviceException, Quality.BAD_EXCEPTION),
        (0x0A, DeviceUnreachable, Quality.BAD_NOT_CONNECTED),
        (0x0B, DeviceUnreachable, Quality.BAD_TIMEOUT),
    ],
)
def test_gateway_exception_codes_mean_the_device_is_unreachable(
    code: int, kind: type[DeviceException], quality: Quality
) -> None:
    """0x0A (no path) and 0x0B (target failed to respond) are about the device; other codes about one read."""
    exc = exception_error("pump-1", code, "1 input at 0")
    assert type(exc) is kind and exc.code == code and exc.quality == quality
    assert str(exc).startswith(f"device 'pump-1': exception {code} ")


async def test_exception_0x0b_turns_the_device_offline_until_it_answers(
    mqtt_url: str, uid: str, tmp_path: Path
) -> None:
    """A serial gateway answering 0x0B for its device: the device goes offline, then online when it answers."""
    absent = True

    async def answer(n: int, tid: int, unit: int, pdu: bytes) -> bytes:
        return reply(tid, unit, bytes([pdu[0] | 0x80, 0x0B]) if absent else registers(pdu, 7))

    async with ScriptedServer(answer) as server:
        device = {"name": "meter-1", "host": "127.0.0.1", "port": server.port, "unit_id": 3, "timeout": 0.5,
                  "tags": [{"name": "kwh", "register": "holding", "address": 0}]}  # fmt: skip
        cfg = parse_config({"gateway": f"gw-{uid}", "site": f"site-{uid}", "poll_interval": 0.1,
                            "state_dir": str(tmp_path), "devices": [device]})  # fmt: skip
        async with Gateway(cfg, mqtt_url=mqtt_url) as gw:
            await wait_until_async(lambda: server.requests >= 2, 5, what="two polls answered with 0x0B")
            assert gw.stats.device_online["meter-1"] is False
            assert "gateway target device failed to respond" in gw.stats.device_errors["meter-1"]
            absent = False
            await wait_until_async(lambda: gw.stats.device_online["meter-1"], 10, what="the device back online")


async def test_illegal_address_marks_only_that_reads_tags_bad(sim: PumpModbusServer) -> None:
    """A read the device refuses marks its tags BAD_EXCEPTION; other reads of the device stay good."""
    tags = [
        {"name": "flow", "register": "input", "address": 0, "data_type": "float32"},
        {"name": "ghost", "register": "input", "address": 500},
    ]
    values = await poll_once(pump_device(sim.port, tags=tags))
    assert values["flow"][1] == Quality.GOOD
    assert values["ghost"] == (0.0, Quality.BAD_EXCEPTION)


async def test_nothing_listening_is_not_connected() -> None:
    """Connecting to a closed port raises DeviceNotConnected naming the device."""
    driver = ModbusTcpDriver(pump_device(closed_port(), profile="pump-p100", timeout=0.5))
    with pytest.raises(DeviceNotConnected, match="pump-1"):
        await driver.connect()


async def test_a_server_that_goes_away_raises_a_device_error(sim: PumpModbusServer) -> None:
    """After the simulator stops, the next poll raises a DeviceError (not a pymodbus exception)."""
    driver = ModbusTcpDriver(pump_device(sim.port, profile="pump-p100", timeout=0.3))
    await driver.connect()
    await driver.poll()
    await sim.stop()
    await wait_until_async(lambda: not driver.connected, 5, what="the driver to see the connection close")
    with pytest.raises(DeviceError):
        await driver.poll()
    await driver.close()


def test_tags_accept_the_yaml_key_register() -> None:
    """YAML says 'register:'; the model exposes it as register_type."""
    assert Tag.model_validate({"name": "t", "register": "input", "address": 1}).register_type == "input"
