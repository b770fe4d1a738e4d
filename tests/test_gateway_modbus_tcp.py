"""The lean Modbus TCP client: pure MBAP frames table-tested; the client against pymodbus' server and faults."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.config import ModbusTcpDevice
from gateway.decode import encode
from gateway.errors import DeviceError, DeviceException, DeviceNotConnected, DeviceTimeout
from gateway.modbus import ModbusTcpDriver
from gateway.modbus_tcp import (
    ExceptionReply,
    FrameError,
    MbapClient,
    StrayReply,
    encode_read,
    next_tid,
    parse_header,
    parse_reply,
    unpack_bits,
)
from gateway.planner import ReadRequest
from simulators.register_bank import RegisterBankServer
from tests.support.scripted_modbus import ScriptedServer, registers, reply

# --- pure frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "frame"),
    [
        ((1, 1, 3, 0, 1), "0001 0000 0006 01 03 0000 0001"),
        ((0xFFFF, 247, 4, 0x1234, 125), "ffff 0000 0006 f7 04 1234 007d"),
        ((0, 0, 1, 65535, 1), "0000 0000 0006 00 01 ffff 0001"),
        ((7, 2, 2, 0, 2000), "0007 0000 0006 02 02 0000 07d0"),
    ],
)
def test_encode_read_builds_the_mbap_request(args: tuple[int, int, int, int, int], frame: str) -> None:
    """The request is MBAP (tid, protocol 0, length 6, unit) then function, address, count — big-endian."""
    assert encode_read(*args) == bytes.fromhex(frame.replace(" ", ""))


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ((1, 1, 5, 0, 1), "function code 5"),
        ((1, 1, 3, 0, 126), "count 126 outside 1..125"),
        ((1, 1, 1, 0, 2001), "count 2001 outside 1..2000"),
        ((1, 1, 3, 0, 0), "count 0"),
        ((1, 1, 3, 65535, 2), "address 65535"),
        ((1, 256, 3, 0, 1), "unit id 256"),
        ((65536, 1, 3, 0, 1), "transaction id 65536"),
    ],
)
def test_encode_read_rejects_what_the_protocol_cannot_carry(
    args: tuple[int, int, int, int, int], complaint: str
) -> None:
    """A request outside the protocol's limits is refused before it is sent, naming the field."""
    with pytest.raises(ValueError, match=complaint):
        encode_read(*args)


@pytest.mark.parametrize(("tid", "after"), [(0, 1), (1, 2), (65534, 65535), (65535, 0)])
def test_transaction_ids_wrap_at_65535(tid: int, after: int) -> None:
    """Transaction ids are 16 bits: 65535 is followed by 0."""
    assert next_tid(tid) == after


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0001 0000 0005 01", (1, 5, 1)),
        ("ffff 0000 00fe 11", (65535, 254, 17)),
        ("0000 0000 0002 00", (0, 2, 0)),
    ],
)
def test_parse_header(header: str, expected: tuple[int, int, int]) -> None:
    """A header gives (tid, length, unit)."""
    assert parse_header(bytes.fromhex(header.replace(" ", ""))) == expected


@pytest.mark.parametrize(
    ("header", "complaint"),
    [
        ("0001 0001 0005 01", "protocol id 1"),
        ("0001 0000 0001 01", "length 1 outside 2..254"),
        ("0001 0000 00ff 01", "length 255"),
        ("0001 0000 0005", "header of 6 bytes"),
    ],
)
def test_parse_header_rejects_what_is_not_modbus_tcp(header: str, complaint: str) -> None:
    """A header with another protocol id or an impossible length is a FrameError naming the field."""
    with pytest.raises(FrameError, match=complaint):
        parse_header(bytes.fromhex(header.replace(" ", "")))


@pytest.mark.parametrize(
    ("pdu", "function", "count", "data"),
    [
        ("03 04 0102 0304", 3, 2, "0102 0304"),
        ("04 02 ffff", 4, 1, "ffff"),
        ("01 01 05", 1, 3, "05"),
        ("02 02 ff 01", 2, 9, "ff01"),
    ],
)
def test_parse_reply_gives_the_data_bytes(pdu: str, function: int, count: int, data: str) -> None:
    """A valid reply gives its data bytes as received (registers big-endian, bits packed LSB first)."""
    assert parse_reply(bytes.fromhex(pdu.replace(" ", "")), 1, 1, function, count) == bytes.fromhex(
        data.replace(" ", "")
    )


@pytest.mark.parametrize(
    ("pdu", "function", "code"), [("83 02", 3, 2), ("84 04", 4, 4), ("81 01", 1, 1), ("82 0b", 2, 11)]
)
def test_parse_reply_raises_the_exception_code(pdu: str, function: int, code: int) -> None:
    """An exception answer (function | 0x80) raises ExceptionReply carrying its code."""
    with pytest.raises(ExceptionReply) as caught:
        parse_reply(bytes.fromhex(pdu.replace(" ", "")), 1, 1, function, 1)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("pdu", "unit", "function", "count", "complaint"),
    [
        ("03 02 0001", 2, 3, 1, "reply from unit 2, asked unit 1"),
        ("04 02 0001", 1, 3, 1, "reply to function 4, asked function 3"),
        ("03 04 0001 0002", 1, 3, 1, "byte count 4 for 1 registers, expected 2"),
        ("03 02 0001 0002", 1, 3, 1, "PDU of 6 bytes does not match its byte count 2"),
        ("03 04 0001", 1, 3, 2, "PDU of 4 bytes"),
        ("01 02 0100", 1, 1, 8, "byte count 2 for 8 bits, expected 1"),
        ("03", 1, 3, 1, "byte count none"),
        ("", 1, 3, 1, "empty PDU"),
        ("83 02 00", 1, 3, 1, "exception reply of 3 bytes"),
    ],
)
def test_parse_reply_rejects_malformed_replies(pdu: str, unit: int, function: int, count: int, complaint: str) -> None:
    """A reply from another unit, to another function, or with a wrong byte count/length is a FrameError."""
    with pytest.raises(FrameError, match=complaint):
        parse_reply(bytes.fromhex(pdu.replace(" ", "")), unit, 1, function, count)


@pytest.mark.parametrize(
    ("data", "count", "bits"), [("05", 3, [1, 0, 1]), ("ff01", 9, [1] * 9), ("0080", 16, [0] * 15 + [1])]
)
def test_unpack_bits_lsb_first(data: str, count: int, bits: list[int]) -> None:
    """Coils and discrete inputs are packed eight to a byte, lowest address in the lowest bit."""
    assert unpack_bits(bytes.fromhex(data), count) == bits


# --- against pymodbus' server (the independent implementation) ---------------------------------


@pytest.fixture
async def bank() -> AsyncIterator[RegisterBankServer]:
    holding = {a: r for a, r in enumerate([*encode(12.5, "float32", "ABCD"), 0xBEEF, 0, 7])} | {21: 5}
    server = RegisterBankServer(
        holding=holding,
        input_registers={0: 1, 1: 65535, 2: 300},
        coils={0: True, 1: False, 2: True, 9: True},
        discrete={3: True},
        holes=[20],
    )
    async with server:
        yield server


async def test_reads_every_table_from_pymodbus(bank: RegisterBankServer) -> None:
    """Function codes 1-4 against pymodbus' server: register bytes as served, bits unpacked."""
    client = await MbapClient.open("127.0.0.1", bank.port, 1.0)
    try:
        assert await client.read(3, 0, 5, 1) == struct.pack(">5H", *encode(12.5, "float32", "ABCD"), 0xBEEF, 0, 7)
        assert await client.read(4, 0, 3, 1) == struct.pack(">3H", 1, 65535, 300)
        assert unpack_bits(await client.read(1, 0, 10, 1), 10) == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
        assert unpack_bits(await client.read(2, 0, 4, 1), 4) == [0, 0, 0, 1]
    finally:
        client.close()


async def test_exception_from_pymodbus_keeps_the_connection(bank: RegisterBankServer) -> None:
    """Exception 2 for a hole raises ExceptionReply(2); the next read on the same connection works."""
    client = await MbapClient.open("127.0.0.1", bank.port, 1.0)
    try:
        with pytest.raises(ExceptionReply) as caught:
            await client.read(3, 18, 4, 1)
        assert caught.value.code == 2
        assert client.connected
        assert await client.read(3, 2, 1, 1) == b"\xbe\xef"
    finally:
        client.close()


async def test_transaction_ids_wrap_against_pymodbus(bank: RegisterBankServer) -> None:
    """Reads with ids 65535, 0 and 1 in a row are all answered and matched."""
    client = await MbapClient.open("127.0.0.1", bank.port, 1.0)
    client._tid = 65534  # the next request carries 65535
    try:
        for _ in range(3):
            assert await client.read(4, 2, 1, 1) == struct.pack(">H", 300)
        assert client._tid == 1
    finally:
        client.close()


async def test_driver_uses_the_lean_client_and_splits_on_exception_2(bank: RegisterBankServer) -> None:
    """Socket framing goes through MbapClient (register bytes to the decoder); a read over the hole is split."""
    tags = [{"name": "t", "address": 0, "data_type": "float32"}, {"name": "u", "address": 2},
            {"name": "past-hole", "address": 21}]  # fmt: skip
    driver = ModbusTcpDriver(ModbusTcpDevice(name="bank", host="127.0.0.1", port=bank.port, tags=tags, max_gap=32))
    await driver.connect()
    try:
        assert isinstance(driver._lean, MbapClient)
        assert await driver.read(ReadRequest("holding", 0, 2, ())) == struct.pack(
            ">2H", *encode(12.5, "float32", "ABCD")
        )
        values = {v.tag.name: (v.value, v.quality) for v in await driver.poll()}
        with pytest.raises(DeviceException) as caught:
            await driver.read(ReadRequest("holding", 20, 1, ()))
    finally:
        await driver.close()
    assert values["t"] == (12.5, 0) and values["u"] == (0xBEEF, 0)
    assert values["past-hole"] == (5.0, 0)  # the merged read 0..21 crossed hole 20 and was split
    assert driver.splits >= 1
    assert caught.value.code == 2


# --- scripted faults -------------------------------------------------------------------------


def lean_driver(port: int, timeout: float = 0.3) -> ModbusTcpDriver:
    return ModbusTcpDriver(ModbusTcpDevice(name="dev-x", host="127.0.0.1", port=port, timeout=timeout,
                                           tags=[{"name": "a", "address": 0}]))  # fmt: skip


async def test_late_reply_to_a_timed_out_request_is_recognised_and_dropped() -> None:
    """Request 1 times out; its answer arrives before request 2's: dropped as late, request 2 gets its own."""

    async def answer(n: int, tid: int, unit: int, pdu: bytes) -> bytes:
        if n == 1:
            await asyncio.sleep(0.35)  # time must pass: answer after the client's 0.2 s timeout
        return reply(tid, unit, registers(pdu, value=n))

    async with ScriptedServer(answer) as server:
        client = await MbapClient.open("127.0.0.1", server.port, 0.2)
        try:
            with pytest.raises(TimeoutError):
                await client.read(3, 0, 1, 1)
            assert await client.read(3, 0, 1, 1) == struct.pack(">H", 2)
            assert client.late_replies == 1
            assert client.connected
        finally:
            client.close()


async def test_unknown_transaction_id_fails_at_once_and_closes() -> None:
    """A reply with an id never sent raises StrayReply as soon as it arrives (not after the timeout) and closes."""

    async def answer(n: int, tid: int, unit: int, pdu: bytes) -> bytes:
        return reply((tid + 1000) & 0xFFFF, unit, registers(pdu))

    async with ScriptedServer(answer) as server:
        client = await MbapClient.open("127.0.0.1", server.port, 5.0)
        started = time.monotonic()
        with pytest.raises(StrayReply, match="transaction id 1001, expected 1"):
            await client.read(3, 0, 1, 1)
        assert time.monotonic() - started < 2.0
        assert not client.connected


async def test_driver_retries_once_after_a_stray_reply_then_reports_the_mismatch() -> None:
    """The driver reconnects and retries once; a device that keeps answering with wrong ids is a DeviceTimeout."""

    async def answer(n: int, tid: int, unit: int, pdu: bytes) -> bytes:
        return reply((tid + 7) & 0xFFFF, unit, registers(pdu))

    async with ScriptedServer(answer) as server:
        driver = lean_driver(server.port)
        await driver.connect()
        with pytest.raises(DeviceTimeout, match="transaction id"):
            await driver.poll()
        await driver.close()
    assert driver.tid_resets == 1
    assert server.requests == 2


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (lambda tid, unit, pdu: reply(tid, unit, bytes([3, 4]) + b"\0\1\0\2"), "byte count 4"),
        (lambda tid, unit, pdu: reply(tid, unit + 1, registers(pdu)), "reply from unit 2"),
        (lambda tid, unit, pdu: reply(tid, unit, registers(pdu), protocol=9), "protocol id 9"),
        (lambda tid, unit, pdu: reply(tid, unit, bytes([6, 2, 0, 1])), "reply to function 6"),
    ],
)
async def test_malformed_reply_is_a_clear_error_and_resets_the_connection(
    make: Callable[[int, int, bytes], bytes], complaint: str
) -> None:
    """A malformed reply is a DeviceError naming device, read and field; the connection is closed."""

    async def answer(n: int, tid: int, unit: int, pdu: bytes) -> bytes:
        return make(tid, unit, pdu)

    async with ScriptedServer(answer) as server:
        driver = lean_driver(server.port)
        await driver.connect()
        with pytest.raises(DeviceError, match=f"dev-x.*{complaint}") as caught:
            await driver.poll()
        assert not driver.connected
        await driver.close()
    assert not isinstance(caught.value, DeviceTimeout | DeviceNotConnected | DeviceException)


async def test_silence_is_a_timeout_and_eof_is_not_connected() -> None:
    """No answer within the timeout -> DeviceTimeout; the device closing the socket -> DeviceNotConnected."""

    async def silent(n: int, tid: int, unit: int, pdu: bytes) -> None:
        return None

    async def hang_up(n: int, tid: int, unit: int, pdu: bytes) -> bytes:
        return b"close"

    async with ScriptedServer(silent) as server:
        driver = lean_driver(server.port, timeout=0.2)
        await driver.connect()
        with pytest.raises(DeviceTimeout, match=r"no response in 0\.2 s"):
            await driver.poll()
        await driver.close()
    async with ScriptedServer(hang_up) as server:
        driver = lean_driver(server.port)
        await driver.connect()
        with pytest.raises(DeviceNotConnected, match="dev-x"):
            await driver.poll()
        await driver.close()
