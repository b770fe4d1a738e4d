"""Modbus RTU on a serial port: one connection and one request at a time per bus.

Several devices (unit ids) on one RS-485 line share the wire, so they must never
be spoken to at once. Every device naming the same ``serial_port`` gets its own
:class:`ModbusRtuDriver` (its own poll task, backoff, pacing, online state and
log-once error handling in the agent) but they share one :class:`SerialBus`: one
pymodbus serial client and a lock held for exactly one request/response. A unit
that does not answer therefore holds the line for at most its ``timeout`` per
request; then its task backs off and the other units get the line again.

The port is opened by the first driver that needs it and closed when the last
driver lets go; a device timing out never closes the port under its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from gateway.config import ModbusRtuDevice
from gateway.errors import DeviceNotConnected
from gateway.modbus import ModbusTcpDriver, _translate


class SerialBus:
    """One serial line: the shared client, the lock that serialises requests, and who uses it."""

    def __init__(self, device: ModbusRtuDevice) -> None:
        self.port = device.serial_port
        self.settings = (device.baudrate, device.parity, device.stopbits, device.bytesize)
        self.timeout = device.timeout
        self.lock = asyncio.Lock()
        self.client: AsyncModbusSerialClient | None = None
        self._users: set[object] = set()

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    async def acquire(self, user: object, device: str) -> AsyncModbusSerialClient:
        """Open the port if needed (or raise :class:`DeviceNotConnected` naming ``device``) and register ``user``."""
        async with self.lock:
            client = self.client
            if client is None or not client.connected:
                if client is not None:
                    client.close()
                baudrate, parity, stopbits, bytesize = self.settings
                client = AsyncModbusSerialClient(
                    self.port,
                    framer=FramerType.RTU,
                    baudrate=baudrate,
                    parity=parity,
                    stopbits=stopbits,
                    bytesize=bytesize,
                    timeout=self.timeout,
                    retries=0,
                    reconnect_delay=0,
                    name=f"fw-bus-{self.port}",
                )
                with _translate(device):
                    ok = await client.connect()
                if not ok:
                    client.close()
                    raise DeviceNotConnected(device, f"cannot open serial port {self.port}")
                self.client = client
            self._users.add(user)
            return client

    def release(self, user: object) -> None:
        """Forget ``user``; close the port when nobody uses it any more."""
        self._users.discard(user)
        if not self._users and self.client is not None:
            self.client.close()
            self.client = None


class ModbusRtuDriver(ModbusTcpDriver):
    """A Modbus RTU device on a :class:`SerialBus`: same plan, decoding and splitting as TCP."""

    def __init__(self, device: ModbusRtuDevice, bus: SerialBus) -> None:
        super().__init__(device)
        self.bus = bus
        self._joined = False

    @property
    def connected(self) -> bool:
        return self._joined and self.bus.connected

    async def connect(self) -> None:
        self._client = await self.bus.acquire(self, self.device.name)
        self._joined = True

    async def close(self) -> None:
        self._client = None
        if self._joined:
            self._joined = False
            self.bus.release(self)

    def _exclusive(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self.bus.lock


def bus_for(device: ModbusRtuDevice, buses: dict[str, SerialBus]) -> SerialBus:
    """The shared bus of ``device``'s serial port (created on first use)."""
    bus = buses.get(device.serial_port)
    if bus is None:
        bus = buses[device.serial_port] = SerialBus(device)
    return bus
