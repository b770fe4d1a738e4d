"""The Modbus driver against a real pymodbus server: every type and order, bit tables, holes, RTU framing, pacing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fwcore.contract import Quality
from gateway.config import ModbusTcpDevice
from gateway.decode import NUMERIC_TYPES, WORD_ORDERS, encode, register_count
from gateway.modbus import ModbusTcpDriver
from simulators.register_bank import RegisterBankServer

VALUES = {"int16": -1234, "uint16": 54321, "int32": -123456, "uint32": 3_000_000_000, "float32": 12.5,
          "int64": -(2**40), "uint64": 2**50 + 3, "float64": -0.015625}  # fmt: skip


def layout() -> tuple[dict[int, int], list[dict[str, Any]], dict[str, float]]:
    """Every numeric type x order laid out back to back in holding registers, with expected values."""
    holding: dict[int, int] = {}
    tags: list[dict[str, Any]] = []
    expected: dict[str, float] = {}
    addr = 0
    for data_type in NUMERIC_TYPES:
        for order in WORD_ORDERS:
            name = f"{data_type}-{order}"
            for i, reg in enumerate(encode(VALUES[data_type], data_type, order)):
                holding[addr + i] = reg
            tags.append({"name": name, "address": addr, "data_type": data_type, "word_order": order})
            expected[name] = float(VALUES[data_type])
            addr += register_count(data_type)
    return holding, tags, expected


@pytest.fixture(params=["socket", "rtu"])
async def bank(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RegisterBankServer, list[dict[str, Any]], dict]]:
    holding, tags, expected = layout()
    base = max(holding) + 1
    holding[base] = 0b1010_0000_0000_0100  # bits 2, 13 and 15 set
    holding[base + 1] = 500  # clamps to 100
    tags += [
        {"name": "bit2", "address": base, "data_type": "bit", "bit": 2},
        {"name": "bit3", "address": base, "data_type": "bit", "bit": 3},
        {"name": "bit15", "address": base, "data_type": "bit", "bit": 15},
        {"name": "limited", "address": base + 1, "scale": 0.5, "max": 100},
        {"name": "scaled", "address": base + 1, "scale": 0.1, "offset": -10},
        {"name": "pump-on", "register": "coil", "address": 3, "data_type": "bool"},
        {"name": "pump-off", "register": "coil", "address": 4, "data_type": "bool"},
        {"name": "door", "register": "discrete", "address": 17, "data_type": "bool"},
        {"name": "in-reg", "register": "input", "address": 2, "data_type": "int16"},
    ]
    expected |= {"bit2": 1.0, "bit3": 0.0, "bit15": 1.0, "limited": 100.0, "scaled": 40.0,
                 "pump-on": 1.0, "pump-off": 0.0, "door": 1.0, "in-reg": -2.0}  # fmt: skip
    server = RegisterBankServer(
        holding=holding,
        coils={3: True, 4: False},
        discrete={17: True},
        input_registers={2: 0xFFFE},
        framer=request.param,
    )
    await server.start()
    yield server, tags, expected
    await server.stop()


def device(port: int, tags: list[dict[str, Any]], **kw: Any) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate({"name": "bank", "host": "127.0.0.1", "port": port, "tags": tags, **kw})


async def test_every_type_order_bit_table_and_clamp_reads_right_over_socket_and_rtu_framing(bank) -> None:
    """Each numeric type in each byte order, bits of a register, coils, discrete inputs and input registers
    decode to the served values over Modbus TCP and RTU-over-TCP; a clamped value is BAD_OUT_OF_RANGE."""
    server, tags, expected = bank
    driver = ModbusTcpDriver(device(server.port, tags, framer="rtu" if server.framer.value == "rtu" else "socket"))
    await driver.connect()
    try:
        values = {v.tag.name: v for v in await driver.poll()}
    finally:
        await driver.close()
    assert {name: v.value for name, v in values.items()} == pytest.approx(expected)
    bad = {name: v.quality for name, v in values.items() if v.quality != Quality.GOOD}
    assert bad == {"limited": Quality.BAD_OUT_OF_RANGE}
    assert len(driver.plan) == 4  # one read per table: holding, input, coil, discrete


async def test_a_merged_read_over_a_hole_is_split_and_the_split_is_remembered() -> None:
    """A read spanning an illegal address is split until each part is readable, and later polls reuse the split."""
    server = RegisterBankServer(holding={0: 1, 1: 2, 5: 6, 9: 10, 10: 11}, holes=[3, 7])
    await server.start()
    tags = [{"name": f"r{a}", "address": a} for a in (0, 1, 5, 9, 10)]
    driver = ModbusTcpDriver(device(server.port, tags, max_gap=16))
    assert len(driver.plan) == 1
    await driver.connect()
    try:
        first = await driver.poll()
        splits = driver.splits
        second = await driver.poll()
    finally:
        await driver.close()
        await server.stop()
    for values in (first, second):
        assert {v.tag.name: (v.value, v.quality) for v in values} == {
            "r0": (1.0, 0), "r1": (2.0, 0), "r5": (6.0, 0), "r9": (10.0, 0), "r10": (11.0, 0)
        }  # fmt: skip
    assert splits >= 2 and driver.splits == splits  # the second poll did not split again
    assert [(r.address, r.count) for r in driver.plan] == [(0, 2), (5, 1), (9, 2)]


async def test_a_tag_on_an_illegal_address_alone_is_bad_exception() -> None:
    """A tag that is itself in a hole reads BAD_EXCEPTION while its neighbours stay good."""
    server = RegisterBankServer(holding={0: 1, 2: 3}, holes=[1])
    await server.start()
    driver = ModbusTcpDriver(device(server.port, [{"name": f"r{a}", "address": a} for a in (0, 1, 2)]))
    await driver.connect()
    try:
        values = {v.tag.name: v.quality for v in await driver.poll()}
    finally:
        await driver.close()
        await server.stop()
    assert values == {"r0": Quality.GOOD, "r1": Quality.BAD_EXCEPTION, "r2": Quality.GOOD}


async def test_request_interval_paces_requests_to_one_device() -> None:
    """With request_interval 0.15 s, three reads of one device take at least 0.3 s."""
    server = RegisterBankServer(holding={0: 1, 100: 2, 200: 3})
    await server.start()
    tags = [{"name": f"r{a}", "address": a} for a in (0, 100, 200)]
    driver = ModbusTcpDriver(device(server.port, tags, max_gap=0, request_interval=0.15))
    await driver.connect()
    try:
        await driver.poll()  # the first request of a connection may go at once
        started = time.monotonic()
        values = await driver.poll()
        elapsed = time.monotonic() - started
    finally:
        await driver.close()
        await server.stop()
    assert [v.value for v in values] == [1.0, 2.0, 3.0]
    assert elapsed >= 0.3
