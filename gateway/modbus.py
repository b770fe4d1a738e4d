"""Modbus TCP driver: the lean MBAP client for socket framing, pymodbus for RTU framing over TCP.

Reads follow the device's plan (:mod:`gateway.planner`); a merged read refused
with exception 2 (illegal data address) is split and retried at once, and the
split is kept for the device's lifetime (logged once). ``request_interval``
paces requests for slow devices behind serial gateways.

``framer: socket`` (plain Modbus TCP) goes through :class:`gateway.modbus_tcp.MbapClient`
(a fraction of pymodbus' CPU per read, which mattered at 100k points/s; its register
bytes go to the block decoder as they are). ``framer: rtu`` (serial device servers) and
serial lines (:mod:`gateway.serialbus`) keep pymodbus' ``AsyncModbusTcpClient``/serial client.

Errors of both clients are translated into :mod:`gateway.errors` here
(:func:`_translate` for pymodbus, :meth:`ModbusTcpDriver._read_lean` for the lean client),
so the poll loop only sees ``DeviceTimeout``, ``DeviceNotConnected``, ``DeviceException``
(``DeviceUnreachable`` for a serial gateway's 0x0A/0x0B: the device behind it is gone, so the
poll fails as on a timeout) and a plain ``DeviceError`` for a malformed reply, after which the
connection is closed.
Reconnection and backoff belong to the caller (the agent); pymodbus' own
automatic reconnect is switched off so there is exactly one retry policy.

Transaction-id mismatches (socket framing): a reply whose transaction id is not the one
awaited means the byte stream is out of step (a confused gateway, or a reply to a request
that was never sent on this connection): the lean client closes the connection, and the
driver **reconnects and retries the read once** (``tid_resets``) instead of declaring the
device dead. A late reply to an earlier request of the same connection that timed out is
recognised as such and dropped (``late_replies``): MBAP's length field keeps the stream framed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from gateway.blockdecode import BlockDecoder, TagValue
from gateway.config import ModbusRtuDevice, ModbusTcpDevice
from gateway.errors import (
    DeviceError,
    DeviceException,
    DeviceNotConnected,
    DeviceTimeout,
    DeviceUnreachable,
    TransactionMismatch,
    exception_error,
)
from gateway.modbus_tcp import FUNCTION_CODES, ExceptionReply, FrameError, MbapClient, StrayReply, unpack_bits
from gateway.planner import ReadRequest, plan_reads, split_request

log = logging.getLogger(__name__)

ILLEGAL_DATA_ADDRESS = 2


@contextlib.contextmanager
def _translate(device: str) -> Iterator[None]:
    """Map pymodbus/asyncio/OS errors to ours, keeping the cause."""
    try:
        yield
    except ConnectionException as exc:
        raise DeviceNotConnected(device, str(exc) or "not connected") from exc
    except ModbusIOException as exc:
        raise DeviceTimeout(device, "no response") from exc
    except TimeoutError as exc:
        raise DeviceTimeout(device, "no response") from exc
    except OSError as exc:
        raise DeviceNotConnected(device, exc.strerror or str(exc)) from exc
    except ModbusException as exc:
        raise DeviceError(device, str(exc)) from exc


def _what(request: ReadRequest) -> str:
    """``"10 input at 0"``: the read named in error messages."""
    return f"{request.count} {request.register_type} at {request.address}"


class ModbusTcpDriver:
    """Polls one Modbus TCP device according to its tags' read plan."""

    def __init__(self, device: ModbusTcpDevice | ModbusRtuDevice) -> None:
        self.device = device
        self.plan: list[ReadRequest] = plan_reads(
            device.tags, max_registers=device.max_registers, max_gap=device.max_gap
        )
        self._client: ModbusBaseClient | None = None
        self._lean: MbapClient | None = None  # socket framing (see module docstring)
        self._last_request = 0.0
        self._decoders: dict[int, tuple[ReadRequest, BlockDecoder]] = {}
        self._late_before = 0  # late replies counted by connections already closed
        self.splits = 0
        #: Connections reset because a reply carried the wrong transaction id.
        self.tid_resets = 0

    @property
    def connected(self) -> bool:
        if self._lean is not None:
            return self._lean.connected
        return self._client is not None and self._client.connected

    @property
    def late_replies(self) -> int:
        """Late replies (to requests that had timed out) recognised and dropped, over all connections."""
        return self._late_before + (self._lean.late_replies if self._lean is not None else 0)

    async def connect(self) -> None:
        """Open the TCP connection or raise :class:`DeviceNotConnected`."""
        await self.close()
        d = self.device
        assert isinstance(d, ModbusTcpDevice)
        if d.framer == "socket":
            try:
                self._lean = await MbapClient.open(d.host, d.port, d.timeout)
            except TimeoutError as exc:
                detail = f"cannot connect to {d.host}:{d.port}: no answer in {d.timeout} s"
                raise DeviceNotConnected(d.name, detail) from exc
            except OSError as exc:
                raise DeviceNotConnected(d.name, f"cannot connect to {d.host}:{d.port}: {exc.strerror or exc}") from exc
            return
        client = AsyncModbusTcpClient(
            d.host,
            port=d.port,
            framer=FramerType.RTU,
            timeout=d.timeout,
            retries=0,
            reconnect_delay=0,
            name=f"fw-{d.name}",
        )
        with _translate(d.name):
            ok = await client.connect()
        if not ok:
            client.close()
            raise DeviceNotConnected(d.name, f"cannot connect to {d.host}:{d.port}")
        self._client = client

    async def close(self) -> None:
        """Drop the connection (safe when not connected)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
        lean, self._lean = self._lean, None
        if lean is not None:
            self._late_before += lean.late_replies
            lean.close()

    async def _pace(self) -> None:
        gap = self.device.request_interval
        if gap:
            wait = self._last_request + gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_request = time.monotonic()

    async def read(self, request: ReadRequest) -> Sequence[int] | bytes:
        """One read; after a transaction-id mismatch, reset the connection and retry once on a fresh one."""
        try:
            return await self._read_once(request)
        except TransactionMismatch as exc:
            self.tid_resets += 1
            log.warning("%s; connection reset, retrying once", exc)
            await self.connect()
            return await self._read_once(request)

    async def _read_once(self, request: ReadRequest) -> Sequence[int] | bytes:
        """Execute one read of the plan (register bytes, or bits for coils); raise a :class:`DeviceError` on failure."""
        if self._lean is not None:
            return await self._read_lean(self._lean, request)
        client = self._client
        if client is None or not client.connected:
            raise DeviceNotConnected(self.device.name, "not connected")
        fn = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[request.register_type]
        await self._pace()
        with _translate(self.device.name):
            async with self._exclusive():
                response = await fn(request.address, count=request.count, device_id=self.device.unit_id)
        if response.isError():
            code = int(getattr(response, "exception_code", 0) or 0)
            raise exception_error(self.device.name, code, _what(request))
        if request.register_type in ("coil", "discrete"):
            return [int(b) for b in response.bits[: request.count]]
        return list(response.registers)

    async def _read_lean(self, lean: MbapClient, request: ReadRequest) -> Sequence[int] | bytes:
        """One read over the lean client: register data bytes as received, or bits as 0/1; errors translated.

        The error texts are built only on failure: this runs for every read of every poll.
        """
        name = self.device.name
        if not lean.connected:
            raise DeviceNotConnected(name, "not connected")
        await self._pace()
        try:
            data = await lean.read(FUNCTION_CODES[request.register_type], request.address, request.count,
                                   self.device.unit_id)  # fmt: skip
        except ExceptionReply as exc:
            raise exception_error(name, exc.code, _what(request)) from exc
        except StrayReply as exc:
            raise TransactionMismatch(name, f"{exc} while reading {_what(request)}") from exc
        except FrameError as exc:
            raise DeviceError(name, f"malformed reply reading {_what(request)}: {exc}; connection reset") from exc
        except TimeoutError as exc:
            raise DeviceTimeout(name, f"no response in {self.device.timeout} s reading {_what(request)}") from exc
        except OSError as exc:
            raise DeviceNotConnected(name, f"{exc.strerror or exc} reading {_what(request)}") from exc
        if request.register_type in ("coil", "discrete"):
            return unpack_bits(data, request.count)
        return data

    def _exclusive(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Held around each request: nothing for TCP; the bus lock for devices sharing a serial line."""
        return contextlib.nullcontext()

    async def _read_adaptive(self, request: ReadRequest, plan: list[ReadRequest]) -> list[TagValue]:
        """Read ``request``; on "illegal data address" split it and recurse. Appends what it settled on to ``plan``."""
        try:
            registers = await self.read(request)
        except DeviceUnreachable:
            raise  # the device behind a serial gateway is gone: the whole poll fails
        except DeviceException as exc:
            halves = split_request(request) if exc.code == ILLEGAL_DATA_ADDRESS else [request]
            if len(halves) == 1:
                plan.append(request)
                return [TagValue(t, 0.0, exc.quality) for t in request.tags]
            self.splits += 1
            log.info(
                "device %r refused a read of %d %s at %d (illegal address); splitting it and keeping the split",
                self.device.name,
                request.count,
                request.register_type,
                request.address,
            )
            values: list[TagValue] = []
            for half in halves:
                values += await self._read_adaptive(half, plan)
            return values
        plan.append(request)
        return self._decoder(request)(registers)

    def _decoder(self, request: ReadRequest) -> BlockDecoder:
        """The compiled decoder of ``request`` (built once per request of the plan)."""
        entry = self._decoders.get(id(request))
        if entry is None or entry[0] is not request:  # ids of dropped requests can be reused
            entry = (request, BlockDecoder(request.address, request.count, request.register_type, request.tags))
            self._decoders[id(request)] = entry
        return entry[1]

    async def poll(self) -> list[TagValue]:
        """Read every tag once.

        A protocol exception on one read marks only that read's tags bad (after
        splitting, for illegal addresses); timeouts, lost connections and a gateway's
        0x0A/0x0B (:class:`DeviceUnreachable`) are raised, since the device as a whole is gone.
        """
        values: list[TagValue] = []
        plan: list[ReadRequest] = []
        current = self.plan
        try:
            for request in current:
                values += await self._read_adaptive(request, plan)
        finally:
            if len(plan) >= len(current) and plan != current and len(values) == len(self.device.tags):
                self.plan = plan
        return values
