"""The device-driver seam: one driver class per device kind, all polled the same way by the agent.

A driver has ``connected``, ``connect()``, ``poll() -> list[TagValue]`` and
``close()``, and raises only :class:`gateway.errors.DeviceError` subclasses.
The OPC-UA driver is imported lazily so a Modbus-only gateway never loads asyncua.
"""

from __future__ import annotations

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
