"""A Modbus TCP reply with another request's transaction id resets the connection instead of failing the device."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from gateway import ModbusTcpDevice, ModbusTcpDriver


class StrayReplyServer:
    """A minimal Modbus TCP server: every holding register reads 42; chosen replies get a wrong transaction id."""

    def __init__(self, stray: set[int]) -> None:
        self.stray = stray  # request numbers (1-based, over all connections) answered with tid + 100
        self.requests = 0
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                count = struct.unpack(">H", pdu[3:5])[0]
                self.requests += 1
                body = bytes([pdu[0], 2 * count]) + struct.pack(f">{count}H", *([42] * count))
                out_tid = (tid + 100) & 0xFFFF if self.requests in self.stray else tid
                writer.write(struct.pack(">HHHB", out_tid, 0, len(body) + 1, unit) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> StrayReplyServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def stray() -> AsyncIterator[StrayReplyServer]:
    async with StrayReplyServer(stray={2}) as server:
        yield server


async def test_wrong_transaction_id_resets_connection_and_retries(stray: StrayReplyServer) -> None:
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
