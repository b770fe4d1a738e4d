"""Modbus TCP driver: one pymodbus ``AsyncModbusTcpClient`` per device.

pymodbus errors are translated into :mod:`gateway.errors` in one place
(:func:`_translate` and :meth:`ModbusTcpDriver._check`), so the poll loop only
sees ``DeviceTimeout``, ``DeviceNotConnected`` and ``DeviceException``.
Reconnection and backoff belong to the caller (the agent); pymodbus' own
automatic reconnect is switched off so there is exactly one retry policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from fieldwatch.contract import Quality
from gateway.config import ModbusTcpDevice, Tag
from gateway.decode import decode
from gateway.errors import DecodeError, DeviceError, DeviceException, DeviceNotConnected, DeviceTimeout
from gateway.planner import ReadRequest, plan_reads


@dataclass(frozen=True, slots=True)
class TagValue:
    """A decoded tag: ``value`` is meaningful only when ``quality`` is good."""

    tag: Tag
    value: float
    quality: int = Quality.GOOD


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


class ModbusTcpDriver:
    """Polls one Modbus TCP device according to its tags' read plan."""

    def __init__(self, device: ModbusTcpDevice) -> None:
        self.device = device
        self.plan: list[ReadRequest] = plan_reads(
            device.tags, max_registers=device.max_registers, max_gap=device.max_gap
        )
        self._client: AsyncModbusTcpClient | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Open the TCP connection or raise :class:`DeviceNotConnected`."""
        await self.close()
        d = self.device
        client = AsyncModbusTcpClient(
            d.host, port=d.port, timeout=d.timeout, retries=0, reconnect_delay=0, name=f"fw-{d.name}"
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

    async def read(self, request: ReadRequest) -> list[int]:
        """Execute one read of the plan; raise a :class:`DeviceError` subclass on failure."""
        client = self._client
        if client is None or not client.connected:
            raise DeviceNotConnected(self.device.name, "not connected")
        fn = client.read_input_registers if request.register_type == "input" else client.read_holding_registers
        with _translate(self.device.name):
            response = await fn(request.address, count=request.count, device_id=self.device.unit_id)
        if response.isError():
            code = int(getattr(response, "exception_code", 0) or 0)
            raise DeviceException(
                self.device.name,
                f"exception {code} reading {request.count} {request.register_type} registers at {request.address}",
                code,
            )
        return list(response.registers)

    async def poll(self) -> list[TagValue]:
        """Read every tag once.

        A protocol exception on one read marks only that read's tags bad; timeouts
        and lost connections are raised, since the device as a whole is gone.
        """
        values: list[TagValue] = []
        for request in self.plan:
            try:
                registers = await self.read(request)
            except DeviceException as exc:
                values += [TagValue(t, 0.0, exc.quality) for t in request.tags]
                continue
            for tag in request.tags:
                try:
                    value = decode(
                        request.slice_for(tag, registers), tag.data_type, tag.word_order, tag.scale, tag.offset
                    )
                except DecodeError as exc:
                    values.append(TagValue(tag, 0.0, exc.quality))
                else:
                    values.append(TagValue(tag, value))
        return values
