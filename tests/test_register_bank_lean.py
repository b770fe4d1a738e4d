"""The lean bench responder (simulators.register_bank.LeanRegisterBank) against the gateway's real Modbus driver."""

from __future__ import annotations

import asyncio
import struct

import pytest

from fwcore.contract import Quality
from gateway.config import ModbusTcpDevice
from gateway.decode import encode
from gateway.errors import DeviceException
from gateway.modbus import ModbusTcpDriver
from gateway.planner import ReadRequest
from simulators.register_bank import LeanRegisterBank


def _device(port: int, tags: list[dict[str, object]]) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate({"name": "lean", "host": "127.0.0.1", "port": port, "tags": tags})


async def test_driver_reads_every_tag_of_both_tables() -> None:
    """Holding and input registers come back as written (float32 ABCD, int16, uint32 CDAB), over several reads."""
    holding = {i: i * 3 for i in range(300)}  # 300 registers: the plan needs 3 reads
    inputs = dict(enumerate([*encode(12.5, "float32"), *encode(-7, "int16"), *encode(3_000_000_000, "uint32", "CDAB")]))
    tags = [{"name": f"h{i}", "address": i} for i in range(0, 300, 7)]
    tags += [
        {"name": "f", "register": "input", "address": 0, "data_type": "float32"},
        {"name": "i", "register": "input", "address": 2, "data_type": "int16"},
        {"name": "u", "register": "input", "address": 3, "data_type": "uint32", "word_order": "CDAB"},
    ]
    async with LeanRegisterBank(holding=holding, input_registers=inputs) as bank:
        driver = ModbusTcpDriver(_device(bank.port, tags))
        await driver.connect()
        try:
            values = {v.tag.name: (v.value, v.quality) for v in await driver.poll()}
        finally:
            await driver.close()
        assert bank.requests == len(driver.plan) >= 4
    assert values["f"] == (12.5, Quality.GOOD)
    assert values["i"] == (-7.0, Quality.GOOD)
    assert values["u"] == (3_000_000_000.0, Quality.GOOD)
    assert all(values[f"h{i}"] == (float(i * 3), Quality.GOOD) for i in range(0, 300, 7))


async def test_read_past_the_table_is_illegal_address() -> None:
    """A read beyond the served registers answers exception 2, which the driver reports as such."""
    async with LeanRegisterBank(holding={0: 1, 1: 2}) as bank:
        driver = ModbusTcpDriver(_device(bank.port, [{"name": "a", "address": 0}]))
        await driver.connect()
        try:
            with pytest.raises(DeviceException) as err:
                await driver.read(ReadRequest("holding", 1, 5, ()))
        finally:
            await driver.close()
    assert err.value.code == 2


async def test_raw_frames_pipelined_split_and_unknown_function() -> None:
    """Two requests in one segment get two answers; a frame split across segments waits; fc 6 gets exception 1."""
    async with LeanRegisterBank(input_registers={0: 0xABCD, 1: 0x1234}) as bank:
        reader, writer = await asyncio.open_connection("127.0.0.1", bank.port)
        read2 = struct.pack(">HHHBBHH", 1, 0, 6, 9, 4, 0, 2)
        read1 = struct.pack(">HHHBBHH", 2, 0, 6, 9, 4, 1, 1)
        write = struct.pack(">HHHBBHH", 3, 0, 6, 9, 6, 0, 5)
        writer.write(read2 + read1[:5])
        await writer.drain()
        assert await reader.readexactly(13) == struct.pack(">HHHBBBHH", 1, 0, 7, 9, 4, 4, 0xABCD, 0x1234)
        writer.write(read1[5:] + write)
        await writer.drain()
        assert await reader.readexactly(11) == struct.pack(">HHHBBBH", 2, 0, 5, 9, 4, 2, 0x1234)
        assert await reader.readexactly(9) == struct.pack(">HHHBBB", 3, 0, 3, 9, 0x86, 1)
        writer.close()
        await writer.wait_closed()
        assert bank.requests == 3


def test_register_values_must_be_16_bit() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        LeanRegisterBank(holding={0: 70000})
