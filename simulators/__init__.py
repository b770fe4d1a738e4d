"""Simulated field equipment: pure physics models and the Modbus servers that expose them.

Typical use (tests, the demo)::

    from simulators import PumpModel, PumpModbusServer

    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1)})
    await server.start()      # server.port is the bound port
    ...
    await server.stop()
"""

from simulators.modbus_server import PumpModbusServer, free_port
from simulators.pump import FAULTS, MEASUREMENTS, PumpModel, PumpSpec

__all__ = ["FAULTS", "MEASUREMENTS", "PumpModbusServer", "PumpModel", "PumpSpec", "free_port"]
