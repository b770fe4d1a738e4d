"""Modbus TCP driver: one pymodbus ``AsyncModbusTcpClient`` per device (socket or RTU framing).

Reads follow the device's plan (:mod:`gateway.planner`); a merged read refused
with exception 2 (illegal data address) is split and retried at once, and the
split is kept for the device's lifetime (logged once). ``request_interval``
paces requests for slow devices behind serial gateways.

pymodbus errors are translated into :mod:`gateway.errors` in one place
(:func:`_translate` and :meth:`ModbusTcpDriver._check`), so the poll loop only
sees ``DeviceTimeout``, ``DeviceNotConnected`` and ``DeviceException``.
Reconnection and backoff belong to the caller (the agent); pymodbus' own
automatic reconnect is switched off so there is exactly one retry policy.

Transaction-id mismatches: pymodbus 3.16 does not raise on a reply whose
transaction id is not the one it waits for — its framer logs it and skips the
frame, so the request usually ends in a timeout. Such a reply means the byte
stream is out of step (a late answer to an earlier, timed-out request, or a
confused serial gateway), so :func:`_watch_transaction_ids` counts those frames
and the driver then **resets the connection** and retries the read once on a
fresh one, instead of declaring the device dead.
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
    TransactionMismatch,
)
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


class _TidWatch:
    """Counts received frames whose transaction id is not the one awaited."""

    __slots__ = ("mismatches",)

    def __init__(self) -> None:
        self.mismatches = 0


def _watch_transaction_ids(client: AsyncModbusTcpClient) -> _TidWatch:
    """Wrap the client's framer ``decode`` to count mismatched transaction ids (see module docstring).

    Relies on pymodbus 3.16's ``client.ctx.framer.decode`` returning
    ``(used, dev_id, tid, frame)`` and ``client.ctx.request_transaction_id``;
    pyproject pins pymodbus below 3.17, and a test covers it.
    """
    watch = _TidWatch()
    ctx = client.ctx
    framer = ctx.framer
    original = framer.decode

    def decode(data: bytes) -> tuple[int, int, int, bytes]:
        used, dev_id, tid, frame = original(data)
        expected = ctx.request_transaction_id
        if used and frame and tid and expected and tid != expected:
            watch.mismatches += 1
        return used, dev_id, tid, frame

    framer.decode = decode  # type: ignore[method-assign]
    return watch


class ModbusTcpDriver:
    """Polls one Modbus TCP device according to its tags' read plan."""

    def __init__(self, device: ModbusTcpDevice | ModbusRtuDevice) -> None:
        self.device = device
        self.plan: list[ReadRequest] = plan_reads(
            device.tags, max_registers=device.max_registers, max_gap=device.max_gap
        )
        self._client: ModbusBaseClient | None = None
        self._last_request = 0.0
        self._tids: _TidWatch | None = None
        self._stale = False  # a stray reply was seen: reconnect before the next request
        self._decoders: dict[int, tuple[ReadRequest, BlockDecoder]] = {}
        self.splits = 0
        #: Connections reset because a reply carried the wrong transaction id.
        self.tid_resets = 0

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Open the TCP connection or raise :class:`DeviceNotConnected`."""
        await self.close()
        d = self.device
        assert isinstance(d, ModbusTcpDevice)
        client = AsyncModbusTcpClient(
            d.host,
            port=d.port,
            framer=FramerType.RTU if d.framer == "rtu" else FramerType.SOCKET,
            timeout=d.timeout,
            retries=0,
            reconnect_delay=0,
            name=f"fw-{d.name}",
        )
        tids = _watch_transaction_ids(client) if d.framer == "socket" else None
        with _translate(d.name):
            ok = await client.connect()
        if not ok:
            client.close()
            raise DeviceNotConnected(d.name, f"cannot connect to {d.host}:{d.port}")
        self._client = client
        self._tids = tids

    async def close(self) -> None:
        """Drop the connection (safe when not connected)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _pace(self) -> None:
        gap = self.device.request_interval
        if gap:
            wait = self._last_request + gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_request = time.monotonic()

    async def read(self, request: ReadRequest) -> Sequence[int]:
        """One read; after a transaction-id mismatch, reset the connection and retry once on a fresh one."""
        if self._stale:
            self._stale = False
            await self.connect()
        try:
            return await self._read_once(request)
        except TransactionMismatch as exc:
            self.tid_resets += 1
            log.warning("%s; connection reset, retrying once", exc)
            await self.connect()
            return await self._read_once(request)

    async def _read_once(self, request: ReadRequest) -> Sequence[int]:
        """Execute one read of the plan (registers, or bits for coils); raise a :class:`DeviceError` on failure."""
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
        tids = self._tids
        seen = tids.mismatches if tids is not None else 0
        try:
            with _translate(self.device.name):
                async with self._exclusive():
                    response = await fn(request.address, count=request.count, device_id=self.device.unit_id)
        except DeviceTimeout as exc:
            if tids is not None and tids.mismatches != seen:
                await self.close()  # the stream is out of step: never reuse it
                raise TransactionMismatch(
                    self.device.name,
                    f"reply with a wrong transaction id while reading {request.count} {request.register_type} "
                    f"at {request.address}",
                ) from exc
            raise
        if tids is not None and tids.mismatches != seen:
            # Our own reply came too, after a stray one: keep it, but do not reuse the stream.
            self.tid_resets += 1
            self._stale = True
        if response.isError():
            code = int(getattr(response, "exception_code", 0) or 0)
            raise DeviceException(
                self.device.name,
                f"exception {code} reading {request.count} {request.register_type} at {request.address}",
                code,
            )
        if request.register_type in ("coil", "discrete"):
            return [int(b) for b in response.bits[: request.count]]
        return list(response.registers)

    def _exclusive(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Held around each request: nothing for TCP; the bus lock for devices sharing a serial line."""
        return contextlib.nullcontext()

    async def _read_adaptive(self, request: ReadRequest, plan: list[ReadRequest]) -> list[TagValue]:
        """Read ``request``; on "illegal data address" split it and recurse. Appends what it settled on to ``plan``."""
        try:
            registers = await self.read(request)
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
        splitting, for illegal addresses); timeouts and lost connections are
        raised, since the device as a whole is gone.
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
