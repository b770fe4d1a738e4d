"""Simulated field equipment: pure physics models, injectable faults and the servers that expose them.

Models (pure, seeded, driven by the caller's time): :class:`PumpModel` (P100),
:class:`ChillerModel` (C200), :class:`CompressorModel` (A300). Register maps in
:mod:`simulators.maps`; faults in :mod:`simulators.faults`; the type-test device
in :mod:`simulators.typetest`. Typical use (tests, the demo)::

    from simulators import ChillerModel, EquipmentModbusServer

    server = EquipmentModbusServer("127.0.0.1", 0, {1: ChillerModel(seed=1)})
    await server.start()      # server.port is the bound port
    server.faults[1].drift("superheat", 0.05)
    ...
    await server.stop()
"""

from simulators.chiller import ChillerModel
from simulators.compressor import CompressorModel
from simulators.faults import FaultSet
from simulators.modbus_server import EquipmentModbusServer, PumpModbusServer, free_port
from simulators.pump import FAULTS, MEASUREMENTS, PumpModel, PumpSpec

__all__ = [
    "FAULTS",
    "MEASUREMENTS",
    "ChillerModel",
    "CompressorModel",
    "EquipmentModbusServer",
    "FaultSet",
    "PumpModbusServer",
    "PumpModel",
    "PumpSpec",
    "free_port",
]
