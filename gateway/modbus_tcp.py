"""A lean asyncio Modbus TCP client (MBAP framing) for the poll loop's read functions 1-4.

Why not pymodbus here: profiling ``bench/gateway.py`` at 100k points/s put pymodbus'
client at ~37% of the gateway's CPU — request/response objects, ``asyncio.wait_for``
per request, a per-register decode into a list, and a debug string of every response
built even with logging off. A read needs far less: one 12-byte request, one reply
whose data bytes go straight to :class:`gateway.blockdecode.BlockDecoder`.
pymodbus stays for RTU framing over TCP and for serial lines (:mod:`gateway.serialbus`).

Layout: pure frame functions first (:func:`encode_read`, :func:`parse_header`,
:func:`parse_reply`, :func:`unpack_bits`, :func:`next_tid` — table-tested in
``tests/test_gateway_modbus_tcp.py``), then the I/O shell (:class:`MbapClient`, an
:class:`asyncio.Protocol`: one future and one timer per request, no extra tasks).

Errors raised here (the driver translates them into :mod:`gateway.errors`)::

    ModbusTcpError
     ├── FrameError         a reply that is not a valid answer to our request (connection closed)
     ├── StrayReply         a reply with a transaction id we never sent on this connection (closed)
     └── ExceptionReply     the device answered with a Modbus exception code (connection kept)
    TimeoutError            no reply within the timeout (connection kept; a late reply is recognised)
    ConnectionError         refused, reset, or closed by the device

Transaction ids: one request in flight per connection; ids run 0..65535 and wrap. A reply
whose id is that of an earlier request that timed out (or was cancelled) on this connection
is a *late reply*: MBAP's length field keeps the stream framed, so it is dropped, counted
(:attr:`MbapClient.late_replies`) and the client keeps waiting for its own answer. Any other
id means the stream is out of step: :class:`StrayReply`, the connection is closed, and the
driver reconnects and retries once.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque

#: Function codes this client reads with, and the table each one reads.
READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT = 1, 2, 3, 4
FUNCTION_CODES = {"coil": READ_COILS, "discrete": READ_DISCRETE, "holding": READ_HOLDING, "input": READ_INPUT}
#: Most registers / bits one read may ask for (Modbus application protocol spec, 6.1-6.4).
MAX_REGISTERS, MAX_BITS = 125, 2000
#: MBAP: transaction id, protocol id (0), length (unit id + PDU), unit id.
HEADER = struct.Struct(">HHHB")
HEADER_SIZE = HEADER.size  # 7
#: Largest PDU is 253 bytes, so the length field (unit id + PDU) is 2..254.
MAX_LENGTH = 254
_REQUEST = struct.Struct(">HHHBBHH")
#: How many timed-out transaction ids a connection remembers to recognise late replies.
LATE_MEMORY = 16


class ModbusTcpError(Exception):
    """Base of this module's protocol errors."""


class FrameError(ModbusTcpError):
    """The bytes received are not a valid reply to the request sent; the message says which field."""


class StrayReply(ModbusTcpError):
    """A well-framed reply carrying a transaction id that this connection never sent."""

    def __init__(self, tid: int, expected: int | None) -> None:
        super().__init__(f"reply with transaction id {tid}, expected {expected}")
        self.tid = tid
        self.expected = expected


class ExceptionReply(ModbusTcpError):
    """The device answered with exception ``code`` (e.g. 2 = illegal data address)."""

    def __init__(self, function: int, code: int) -> None:
        super().__init__(f"exception {code} to function {function}")
        self.function = function
        self.code = code


# --- pure frame functions ------------------------------------------------------------------


def next_tid(tid: int) -> int:
    """The transaction id after ``tid``: 65535 wraps to 0."""
    return (tid + 1) & 0xFFFF


def encode_read(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    """The MBAP request frame reading ``count`` registers/bits at ``address``; ValueError names a bad argument."""
    if function not in (READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT):
        raise ValueError(f"function code {function} is not a read of coils/discrete inputs/holding/input (1-4)")
    limit = MAX_BITS if function <= READ_DISCRETE else MAX_REGISTERS
    if not 1 <= count <= limit:
        raise ValueError(f"count {count} outside 1..{limit} for function {function}")
    if not 0 <= address <= 0xFFFF or address + count > 0x10000:
        raise ValueError(f"address {address} (+{count}) outside the 0..65535 address space")
    if not 0 <= unit <= 255:
        raise ValueError(f"unit id {unit} outside 0..255")
    if not 0 <= tid <= 0xFFFF:
        raise ValueError(f"transaction id {tid} outside 0..65535")
    return _REQUEST.pack(tid, 0, 6, unit, function, address, count)


def parse_header(header: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """``(tid, length, unit)`` of a 7-byte MBAP header; ``length`` counts the unit id and the PDU.

    Raises :class:`FrameError` for a non-zero protocol id or a length outside 2..254 —
    bytes that are not Modbus TCP, or a stream that lost its framing.
    """
    if len(header) < HEADER_SIZE:
        raise FrameError(f"MBAP header of {len(header)} bytes, need {HEADER_SIZE}")
    tid, protocol, length, unit = HEADER.unpack_from(header)
    if protocol != 0:
        raise FrameError(f"protocol id {protocol} in the MBAP header (Modbus TCP uses 0)")
    if not 2 <= length <= MAX_LENGTH:
        raise FrameError(f"MBAP length {length} outside 2..{MAX_LENGTH}")
    return tid, length, unit


def parse_reply(pdu: bytes, unit: int, expected_unit: int, function: int, count: int) -> bytes:
    """The data bytes of a read reply's PDU (function code first), validated against the request.

    Registers come back as ``2 * count`` big-endian bytes (what ``BlockDecoder`` unpacks
    directly); bits as ``ceil(count / 8)`` bytes, LSB first (see :func:`unpack_bits`).
    Raises :class:`ExceptionReply` for an exception answer, :class:`FrameError` for a
    reply from another unit, to another function, or with a wrong byte count/length.
    """
    if unit != expected_unit:
        raise FrameError(f"reply from unit {unit}, asked unit {expected_unit}")
    if not pdu:
        raise FrameError("empty PDU")
    got = pdu[0]
    if got == function | 0x80:
        if len(pdu) != 2:
            raise FrameError(f"exception reply of {len(pdu)} bytes, expected 2")
        raise ExceptionReply(function, pdu[1])
    if got != function:
        raise FrameError(f"reply to function {got}, asked function {function}")
    want = (count + 7) // 8 if function <= READ_DISCRETE else 2 * count
    if len(pdu) < 2 or pdu[1] != want:
        byte_count = pdu[1] if len(pdu) >= 2 else "none"
        raise FrameError(f"byte count {byte_count} for {count} {'bits' if want != 2 * count else 'registers'}, "
                         f"expected {want}")  # fmt: skip
    if len(pdu) != 2 + want:
        raise FrameError(f"PDU of {len(pdu)} bytes does not match its byte count {want}")
    return pdu[2:]


def unpack_bits(data: bytes, count: int) -> list[int]:
    """The first ``count`` bits of a coil/discrete reply as 0/1 (Modbus packs them LSB first)."""
    return [(data[i >> 3] >> (i & 7)) & 1 for i in range(count)]


# --- the I/O shell ----------------------------------------------------------------------------


class _Pending:
    """The one request in flight: what its reply must match and where to deliver it."""

    __slots__ = ("count", "function", "future", "tid", "unit")

    def __init__(self, tid: int, unit: int, function: int, count: int, future: asyncio.Future[bytes]) -> None:
        self.tid = tid
        self.unit = unit
        self.function = function
        self.count = count
        self.future = future


class MbapClient(asyncio.Protocol):
    """One Modbus TCP connection; ``await MbapClient.open(host, port, timeout)``, then :meth:`read`, :meth:`close`."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.late_replies = 0
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: _Pending | None = None
        self._tid = 0
        self._timed_out: deque[int] = deque(maxlen=LATE_MEMORY)
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> MbapClient:
        """Connect within ``timeout``; raises ``OSError``/``TimeoutError`` as the OS and asyncio do."""
        client = cls(timeout)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: client, host, port)
        return client

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._lost is None

    # asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc if exc is not None else ConnectionResetError("connection closed by the device")
        self._fail(ConnectionResetError(f"connection lost: {self._lost}"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost reports it

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= HEADER_SIZE:
            try:
                tid, length, unit = parse_header(buf)
            except FrameError as exc:
                self._abort(exc)
                return
            end = HEADER_SIZE - 1 + length
            if len(buf) < end:
                return
            pdu = bytes(buf[HEADER_SIZE:end])
            del buf[:end]
            self._deliver(tid, unit, pdu)
            if self._transport is None:  # the reply closed the connection: drop the rest
                buf.clear()
                return

    # ----------------------------------------------------------------------------------------
    def _deliver(self, tid: int, unit: int, pdu: bytes) -> None:
        pending = self._pending
        if pending is not None and tid == pending.tid:
            self._pending = None
            if not pending.future.done():
                try:
                    pending.future.set_result(parse_reply(pdu, unit, pending.unit, pending.function, pending.count))
                except ExceptionReply as exc:
                    pending.future.set_exception(exc)
                except FrameError as exc:
                    self._abort(exc, pending)
            return
        if tid in self._timed_out:
            self._timed_out.remove(tid)
            self.late_replies += 1
            return
        self._abort(StrayReply(tid, pending.tid if pending is not None else None), pending)

    def _abort(self, exc: Exception, pending: _Pending | None = None) -> None:
        """The stream cannot be trusted any more: fail the request in flight and close."""
        pending = pending or self._pending
        self._pending = None
        if pending is not None and not pending.future.done():
            pending.future.set_exception(exc)
        self.close()

    def _fail(self, exc: Exception) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.future.done():
            pending.future.set_exception(exc)

    async def read(self, function: int, address: int, count: int, unit: int) -> bytes:
        """Send one read and await its reply's data bytes (see :func:`parse_reply`)."""
        transport = self._transport
        if transport is None or self._lost is not None:
            raise ConnectionResetError(f"not connected ({self._lost or 'closed'})")
        if self._pending is not None:
            raise RuntimeError("MbapClient sends one request at a time; the caller must serialise reads")
        self._tid = tid = next_tid(self._tid)
        frame = encode_read(tid, unit, function, address, count)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        pending = self._pending = _Pending(tid, unit, function, count, future)
        timer = loop.call_later(self.timeout, _expire, future)
        transport.write(frame)
        try:
            return await future
        except BaseException:
            if self._pending is pending:  # timed out or cancelled: its reply may still come
                self._pending = None
                self._timed_out.append(tid)
            raise
        finally:
            timer.cancel()

    def close(self) -> None:
        """Close the connection (safe twice); a request in flight fails with ConnectionResetError."""
        transport, self._transport = self._transport, None
        if self._lost is None:
            self._lost = ConnectionResetError("closed")
        self._fail(ConnectionResetError("connection closed"))
        if transport is not None:
            transport.close()


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("no reply"))
