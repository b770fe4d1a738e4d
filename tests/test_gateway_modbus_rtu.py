"""Modbus RTU on a real serial line: a socat pty pair, the pump simulator on one end, the gateway on the other."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from fwcore.contract import Quality
from gateway.config import ModbusRtuDevice, parse_config
from gateway.errors import ConfigError, DeviceTimeout
from gateway.serialbus import ModbusRtuDriver, SerialBus
from simulators import PumpModbusServer
from tests.support import serial_line
from tests.support.waits import wait_until_async

pty_pair, serial_pump = serial_line.pty_pair, serial_line.serial_pump  # the fixtures, shared with test_gateway_check

TIMEOUT = 0.3


def rtu_device(port: str, name: str, unit_id: int) -> ModbusRtuDevice:
    config = parse_config(
        {
            "gateway": "gw",
            "site": "s",
            "devices": [
                {
                    "name": name,
                    "protocol": "modbus_rtu",
                    "serial_port": port,
                    "baudrate": 19200,
                    "parity": "N",
                    "stopbits": 1,
                    "bytesize": 8,
                    "unit_id": unit_id,
                    "timeout": TIMEOUT,
                    "profile": "pump-p100",
                }
            ],
        }
    )
    device = config.devices[0]
    assert isinstance(device, ModbusRtuDevice)
    return device


async def test_rtu_values_arrive_decoded(serial_pump: PumpModbusServer, pty_pair: tuple[str, str]) -> None:
    """A pump read over the serial line decodes to the simulator's own register values."""
    bus = SerialBus(rtu_device(pty_pair[1], "pump-1", 1))
    driver = ModbusRtuDriver(rtu_device(pty_pair[1], "pump-1", 1), bus)
    await driver.connect()
    try:
        values = {v.tag.name: (v.value, v.quality) for v in await driver.poll()}
    finally:
        await driver.close()
    ir = serial_pump._units[1].ir
    assert values["flow"] == (pytest.approx(struct.unpack(">f", struct.pack(">HH", ir[0], ir[1]))[0]), Quality.GOOD)
    assert 50 < values["flow"][0] < 200
    assert values["status"] == (ir[10], Quality.GOOD)
    assert values["run_hours"][0] == pytest.approx(((ir[11] << 16) | ir[12]) * 0.01)
    assert values["fault_code"] == (0, Quality.GOOD)
    assert not bus.connected  # the last driver closed the port


async def test_silent_unit_does_not_stall_its_neighbour(
    serial_pump: PumpModbusServer, pty_pair: tuple[str, str]
) -> None:
    """A unit that never answers holds the shared line for at most its timeout per request; unit 1 keeps being read."""
    bus = SerialBus(rtu_device(pty_pair[1], "pump-1", 1))
    good = ModbusRtuDriver(rtu_device(pty_pair[1], "pump-1", 1), bus)
    dead = ModbusRtuDriver(rtu_device(pty_pair[1], "pump-9", 9), bus)
    timeouts = 0

    async def hammer_dead() -> None:
        nonlocal timeouts
        await dead.connect()
        while True:
            with pytest.raises(DeviceTimeout):
                await dead.poll()
            timeouts += 1

    await good.connect()
    task = asyncio.create_task(hammer_dead())
    try:
        await wait_until_async(
            lambda: dead.connected and bus.lock.locked(),
            5,
            what="a request to the dead unit on the line",
            interval=0.005,
        )
        durations = []
        for _ in range(4):
            started = time.monotonic()
            values = await good.poll()
            durations.append(time.monotonic() - started)
            assert all(v.quality == Quality.GOOD for v in values)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dead.close()
        await good.close()
    assert timeouts >= 2  # the dead unit really was competing for the line
    # Each poll of unit 1 is 2 reads; each can wait for at most one in-flight dead request.
    assert max(durations) < 2 * TIMEOUT + 1.0, durations


def test_devices_on_one_port_must_agree_on_line_settings() -> None:
    """Two devices on one serial port with different baudrates are refused, naming both."""
    base = {"protocol": "modbus_rtu", "serial_port": "/dev/ttyUSB0", "profile": "pump-p100"}
    with pytest.raises(ConfigError, match="'p1' and 'p2' share serial port"):
        parse_config(
            {
                "gateway": "gw",
                "site": "s",
                "devices": [
                    {**base, "name": "p1", "unit_id": 1},
                    {**base, "name": "p2", "unit_id": 2, "baudrate": 9600},
                ],
            }
        )
