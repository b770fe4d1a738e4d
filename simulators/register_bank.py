"""A Modbus device with an explicit register map: every table, every encoding, holes and framings.

(:class:`LeanRegisterBank`, at the end, is a minimal responder for benchmarks only.)

Where :mod:`simulators.modbus_server` models a pump, this serves whatever
values a test or a demo sets: holding and input registers, coils and discrete
inputs, and *holes* — addresses that answer exception 2 (illegal data address),
as real devices with sparse maps do. ``framer="rtu"`` speaks RTU frames over
TCP, like a serial device server. Values are written with
:func:`gateway.decode.encode` so every type and byte order can be served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from pymodbus import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

log = logging.getLogger(__name__)


def _blocks(values: dict[int, int] | dict[int, bool], holes: Iterable[int], kind: DataType) -> list[SimData]:
    """Contiguous SimData blocks from address 0 to the highest address, holes as INVALID blocks."""
    hole_set = set(holes)
    top = max([*values, *hole_set], default=0)
    out: list[SimData] = []
    run_vals: list[int | bool] = []
    run_start, run_valid = 0, 0 not in hole_set
    for addr in range(top + 2):
        valid = addr not in hole_set and addr <= top
        if addr > top or valid != run_valid:
            if addr > run_start:
                if run_valid:
                    out.append(SimData(run_start, values=list(run_vals), datatype=kind))
                else:
                    out.append(SimData(run_start, count=addr - run_start, datatype=DataType.INVALID))
            run_start, run_valid, run_vals = addr, valid, []
        if valid:
            default: int | bool = False if kind == DataType.BITS else 0
            run_vals.append(values.get(addr, default))
    return out


class RegisterBankServer:
    """Serve fixed tables on ``host:port`` (``port=0`` picks one); ``await start()`` / ``await stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unit_id: int = 1,
        holding: dict[int, int] | None = None,
        input_registers: dict[int, int] | None = None,
        coils: dict[int, bool] | None = None,
        discrete: dict[int, bool] | None = None,
        holes: Iterable[int] = (),
        framer: str = "socket",
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.unit_id = unit_id
        holes = list(holes)
        self._device = SimDevice(
            id=unit_id,
            simdata=(
                _blocks(coils or {0: False}, (), DataType.BITS),
                _blocks(discrete or {0: False}, (), DataType.BITS),
                _blocks(holding or {0: 0}, holes, DataType.REGISTERS),
                _blocks(input_registers or {0: 0}, (), DataType.REGISTERS),
            ),
        )
        self.framer = FramerType.RTU if framer == "rtu" else FramerType.SOCKET
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        server = ModbusTcpServer([self._device], address=(self.host, self._requested_port), framer=self.framer)
        await server.serve_forever(background=True)
        self._server = server
        sockets = getattr(server.transport, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._requested_port
        log.info("register bank on %s:%s (%s framing)", self.host, self.port, self.framer.value)

    async def stop(self) -> None:
        """Close the listener and connections. Safe twice."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def __aenter__(self) -> RegisterBankServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --- a lean responder for benchmarks -------------------------------------------------------
#: Modbus function codes the lean responder answers (read holding / read input registers).
_READ_HOLDING, _READ_INPUT = 3, 4
_ILLEGAL_FUNCTION, _ILLEGAL_ADDRESS = 1, 2
#: Most registers one read may ask for (Modbus application protocol spec, 6.3/6.4).
_MAX_READ = 125


def _registers_blob(values: dict[int, int]) -> bytes:
    """``{address: register}`` as one big-endian byte string from address 0 (gaps read 0)."""
    top = max(values, default=-1)
    out = bytearray(2 * (top + 1))
    for addr, reg in values.items():
        if not 0 <= reg <= 0xFFFF:
            raise ValueError(f"register {addr} = {reg} is not a 16-bit value (0..65535)")
        out[2 * addr : 2 * addr + 2] = reg.to_bytes(2, "big")
    return bytes(out)


class _LeanProtocol(asyncio.Protocol):
    """One client connection: Modbus TCP (MBAP) frames in, answers out, several frames per read."""

    __slots__ = ("_bank", "_buf", "_transport")

    def __init__(self, bank: LeanRegisterBank) -> None:
        self._bank = bank
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP server's (as gateway.modbus_tcp assumes too)
        self._transport = transport
        self._bank._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._bank._transports.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= 8:
            length = int.from_bytes(buf[pos + 4 : pos + 6], "big")
            if length < 2 or length > 254:  # not Modbus TCP: drop the connection, as devices do
                assert self._transport is not None
                self._transport.close()
                return
            if end - pos < 6 + length:
                break
            out.append(self._bank.answer(buf[pos : pos + 6 + length]))
            pos += 6 + length
        self._buf = buf[pos:]
        if out and self._transport is not None:
            self._transport.write(b"".join(out))


class LeanRegisterBank:
    """A minimal Modbus TCP responder for **benchmarks only**: read holding/input registers from bytes.

    ``bench/gateway.py`` needs 40 devices answering ~1,600 reads per second so the
    gateway, not the simulator, is what gets measured; pymodbus' server needs
    most of a core for that on the dev box and shares the 2 cores with the
    gateway. This responder is an ``asyncio.Protocol`` that slices each answer
    out of a prebuilt big-endian byte string (about 10x less CPU per read).

    What it does: MBAP framing (several frames per segment, frames split across
    segments), function 3 (holding) and 4 (input) from the given tables,
    exception 2 for a read past the table or of more than 125 registers,
    exception 1 for any other function. Any unit id is answered. What it does
    not do: coils, discrete inputs, writes, holes, RTU framing, changing values —
    use :class:`RegisterBankServer` (pymodbus, the full behaviour) for tests.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        holding: dict[int, int] | None = None,
        input_registers: dict[int, int] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self._tables = {
            _READ_HOLDING: _registers_blob(holding or {}),
            _READ_INPUT: _registers_blob(input_registers or {}),
        }
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        #: Requests answered (exceptions included).
        self.requests = 0

    def answer(self, frame: bytes) -> bytes:
        """The response to one complete MBAP frame (header + PDU). Pure apart from the counter."""
        self.requests += 1
        header, fc = frame[:4], frame[7]
        unit = frame[6:7]
        table = self._tables.get(fc)
        if table is None or len(frame) < 12:
            return header + b"\x00\x03" + unit + bytes((fc | 0x80, _ILLEGAL_FUNCTION))
        address = int.from_bytes(frame[8:10], "big")
        count = int.from_bytes(frame[10:12], "big")
        if not 1 <= count <= _MAX_READ or 2 * (address + count) > len(table):
            return header + b"\x00\x03" + unit + bytes((fc | 0x80, _ILLEGAL_ADDRESS))
        n = 2 * count
        return header + (n + 3).to_bytes(2, "big") + unit + bytes((fc, n)) + table[2 * address : 2 * address + n]

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _LeanProtocol(self), self.host, self._requested_port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("lean register bank on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Close the listener and every connection. Safe twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for transport in list(self._transports):
                transport.close()
            self._transports.clear()
            await server.wait_closed()

    async def __aenter__(self) -> LeanRegisterBank:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
