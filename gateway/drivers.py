"""The device-driver seam: one driver class per device kind, all polled the same way by the agent.

A driver has ``connected``, ``connect()``, ``poll() -> list[TagValue]`` and
``close()``, and raises only :class:`gateway.errors.DeviceError` subclasses.

The OPC-UA driver is imported lazily so a Modbus-only gateway never loads asyncua. Importing
asyncua costs 0.2-2 s of CPU, so it must not happen on the running event loop: there it stalls
every device already polling (Modbus devices of the same config timed out at start, and
``gateway check`` measured the stall as their latency). :func:`import_drivers` imports what a
set of devices needs in a worker thread; the agent and the check await it before any device
starts, and ``make_driver`` then finds the module loaded.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from gateway.blockdecode import TagValue
from gateway.config import Device, ModbusRtuDevice, OpcUaDevice

if TYPE_CHECKING:
    from gateway.serialbus import SerialBus


class Driver(Protocol):
    """What the agent's poll loop needs from a device driver."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def poll(self) -> list[TagValue]: ...

    async def close(self) -> None: ...


def driver_module(device: Device) -> str:
    """The module holding ``device``'s driver class."""
    if isinstance(device, ModbusRtuDevice):
        return "gateway.serialbus"
    if isinstance(device, OpcUaDevice):
        return "gateway.opcua"
    return "gateway.modbus"


async def import_drivers(devices: Iterable[Device]) -> None:
    """Import the driver modules ``devices`` need, off the event loop (nothing to do once loaded)."""
    missing = sorted({driver_module(d) for d in devices} - sys.modules.keys())
    if missing:
        await asyncio.to_thread(lambda: [importlib.import_module(m) for m in missing])


def make_driver(device: Device, buses: dict[str, SerialBus] | None = None) -> Driver:
    """The driver for ``device``'s protocol; RTU devices on one serial port share a bus from ``buses``."""
    if isinstance(device, ModbusRtuDevice):
        from gateway.serialbus import ModbusRtuDriver, bus_for

        return ModbusRtuDriver(device, bus_for(device, buses if buses is not None else {}))
    if isinstance(device, OpcUaDevice):
        from gateway.opcua import OpcUaDriver

        return OpcUaDriver(device)
    from gateway.modbus import ModbusTcpDriver

    return ModbusTcpDriver(device)
