"""A Modbus TCP reply with another request's transaction id resets the connection instead of failing the device."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway import ModbusTcpDevice, ModbusTcpDriver
from tests.support.scripted_modbus import ScriptedServer, registers, reply


async def _every_register_42_second_request_stray(n: int, tid: int, unit: int, pdu: bytes) -> bytes:
    """Every holding register reads 42; request 2 (over all connections) comes back with tid + 100."""
    return reply((tid + 100) & 0xFFFF if n == 2 else tid, unit, registers(pdu, 42))


@pytest.fixture
async def stray() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer(_every_register_42_second_request_stray) as server:
        yield server


async def test_wrong_transaction_id_resets_connection_and_retries(stray: ScriptedServer) -> None:
    """The read answered with a wrong transaction id is retried on a new connection and the poll stays good."""
    device = ModbusTcpDevice(
        name="m",
        host="127.0.0.1",
        port=stray.port,
        timeout=0.3,
        tags=[{"name": "a", "address": 0}, {"name": "b", "address": 100}],  # two reads: gap > max_gap
    )
    driver = ModbusTcpDriver(device)
    await driver.connect()
    try:
        first = await driver.poll()  # requests 1 and 2; 2 comes back with a wrong tid
        second = await driver.poll()
    finally:
        await driver.close()
    assert [(v.tag.name, v.value, v.quality) for v in first] == [("a", 42.0, 0), ("b", 42.0, 0)]
    assert [v.value for v in second] == [42.0, 42.0]
    assert driver.tid_resets == 1
    assert stray.connections == 2
