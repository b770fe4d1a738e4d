"""A Modbus TCP server that answers each request as the test's script says: late, wrong, malformed or not at all.

Faults a real device would rarely produce on demand (a reply with another request's transaction
id, a late answer after the client's timeout, garbage) are one ``answer`` function away::

    async def answer(n: int, tid: int, unit: int, pdu: bytes) -> bytes | None:
        return reply(tid, unit, registers(pdu, value=n))

    async with ScriptedServer(answer) as server:
        ...  # connect to server.port
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

Answer = Callable[[int, int, int, bytes], Awaitable[bytes | None]]


class ScriptedServer:
    """Reads Modbus TCP requests in order and writes what ``answer(n, tid, unit, pdu)`` returns (None: nothing)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
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
                self.requests += 1
                out = await self.answer(self.requests, tid, unit, pdu)
                if out == b"close":
                    break
                if out is not None:
                    writer.write(out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


def reply(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
    """An MBAP frame carrying ``pdu`` for transaction ``tid`` and ``unit``."""
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


def registers(pdu: bytes, value: int = 42) -> bytes:
    """A valid read-registers answer to ``pdu`` with every register = ``value``."""
    count = struct.unpack(">H", pdu[3:5])[0]
    return bytes([pdu[0], 2 * count]) + struct.pack(f">{count}H", *([value] * count))
