"""A Modbus TCP (or RTU serial) server that serves simulated P100 pumps, one per unit id.

The physics lives in :mod:`simulators.pump`; this module only turns readings
into registers. It uses pymodbus' ``SimDevice``/``SimData`` datastore (the 3.16
API that survives into 4.0; ``ModbusServerContext`` and friends are deprecated)
and its ``action`` hook: every request first copies the latest snapshot into the
addressed block, and writes to the control registers are turned into physics
calls. A background task advances the physics every ``update_interval`` seconds.

P100 register map (addresses are 0-based PDU addresses; float32 is IEEE-754
big-endian, word order ABCD — high word first)::

    input registers (FC 4, read only)
      0-1   flow                 float32  m3/h
      2-3   discharge_pressure   float32  bar
      4-5   motor_current        float32  A
      6-7   bearing_temp         float32  degC
      8-9   vibration            float32  mm/s RMS
      10    status               uint16   bit0 running, bit1 fault active,
                                          bit2 bearing > 80 degC, bit3 vibration > 7.1 mm/s
      11-12 run_hours            uint32   hours x 100 (scale 0.01), high word first

    holding registers (FC 3 / 6 / 16, read-write)
      0     fault_code           uint16   0 none, 1 bearing_wear  (write to inject / clear)
      1     fault_rate           uint16   bearing heating, 0.01 K/s (default 100 = 1.0 K/s)
      2     run_command          uint16   1 run, 0 stop

Coils and discrete inputs 0-15 are reserved: they read 0 and refuse writes.
A unit id with no pump answers with exception 0x0B (gateway target failed to respond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.pump import FAULTS, MEASUREMENTS, PumpModel

log = logging.getLogger(__name__)

IR_STATUS = 10
IR_RUN_HOURS = 11
IR_COUNT = 13
HR_FAULT_CODE = 0
HR_FAULT_RATE = 1
HR_RUN_COMMAND = 2
HR_COUNT = 3
#: fault_code register values; index 0 is "no fault".
FAULT_CODES: tuple[str | None, ...] = (None, *FAULTS)
DEFAULT_FAULT_RATE = 1.0

_FC_READ_INPUT = 4
_FC_READ_HOLDING = 3
_FC_WRITE_HOLDING = (6, 16, 23)


def float32_registers(value: float) -> list[int]:
    """A float as two registers, big-endian, high word first (ABCD)."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def uint32_registers(value: int) -> list[int]:
    """An unsigned 32-bit integer as two registers, high word first."""
    value = max(0, min(0xFFFFFFFF, value))
    return [value >> 16, value & 0xFFFF]


def input_registers(pump: PumpModel, reading: dict[str, float]) -> list[int]:
    """The 13 input registers of the P100 map for one reading."""
    regs: list[int] = []
    for name in MEASUREMENTS:
        regs += float32_registers(reading[name])
    regs.append(pump.status_word(reading))
    regs += uint32_registers(round(pump.run_hours * 100))
    return regs


def holding_registers(pump: PumpModel, rate_setpoint: float) -> list[int]:
    """The control registers as they read back."""
    code = FAULT_CODES.index(pump.fault)
    return [code, min(0xFFFF, round(rate_setpoint * 100)), 1 if pump.running else 0]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (small race; fine for tests and demos)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Unit:
    """One pump behind one unit id, plus its latest register snapshot."""

    def __init__(self, pump: PumpModel) -> None:
        self.pump = pump
        self.rate_setpoint = pump.fault_rate or DEFAULT_FAULT_RATE
        self.ir: list[int] = [0] * IR_COUNT

    def update(self, t: float) -> None:
        self.ir = input_registers(self.pump, self.pump.step(t))

    def write(self, address: int, values: list[int]) -> ExcCodes | None:
        """Apply a write to the control registers; refuse values the pump cannot take."""
        for i, value in enumerate(values):
            reg = address + i
            if reg == HR_FAULT_CODE:
                if not 0 <= value < len(FAULT_CODES):
                    return ExcCodes.ILLEGAL_VALUE
                fault = FAULT_CODES[value]
                if fault is None:
                    self.pump.clear_fault()
                else:
                    self.pump.inject_fault(fault, self.rate_setpoint)
            elif reg == HR_FAULT_RATE:
                self.rate_setpoint = value / 100.0
                if self.pump.fault:
                    self.pump.fault_rate = self.rate_setpoint
            elif reg == HR_RUN_COMMAND:
                if value not in (0, 1):
                    return ExcCodes.ILLEGAL_VALUE
                self.pump.running = bool(value)
        return None


class PumpModbusServer:
    """Serve ``pumps`` (unit id -> model) on ``host:port``; ``port=0`` picks a free port.

    Lifecycle: ``await start()`` binds and starts updating, ``await stop()`` closes
    (safe to call twice). Also an async context manager.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        pumps: dict[int, PumpModel] | None = None,
        *,
        update_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        serial_port: str | None = None,
        baudrate: int = 19200,
    ) -> None:
        self.host = host
        #: Serve Modbus RTU on this serial device (e.g. one end of a socat pty pair) instead of TCP.
        #: An absent unit id then stays silent, as on a real RS-485 bus.
        self.serial_port = serial_port
        self.baudrate = baudrate
        self._requested_port = port
        self._port: int | None = None
        self.pumps = pumps if pumps is not None else {1: PumpModel()}
        for unit_id in self.pumps:
            if not 1 <= unit_id <= 247:
                raise ValueError(f"unit id {unit_id} is outside 1..247")
        self.update_interval = update_interval
        self._clock = clock
        self._t0 = clock()
        self._units = {uid: _Unit(p) for uid, p in self.pumps.items()}
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._updater: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port actually bound (known after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the server is not started; the port is not known yet")
        return self._port

    def _device(self, unit_id: int) -> SimDevice:
        async def action(
            func_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            unit = self._units.get(unit_id)
            if unit is None:
                if self.serial_port is not None:  # RS-485: an absent unit is simply silent
                    raise NoSuchIdException(f"no pump at unit {unit_id}")
                # Like a TCP-to-serial gateway whose slave is absent (and no KeyError traceback).
                return ExcCodes.GATEWAY_NO_RESPONSE
            if func_code == _FC_READ_INPUT:
                registers[start_address : start_address + IR_COUNT] = unit.ir
            elif func_code == _FC_READ_HOLDING:
                registers[start_address : start_address + HR_COUNT] = holding_registers(unit.pump, unit.rate_setpoint)
            elif func_code in _FC_WRITE_HOLDING and set_values is not None:
                return unit.write(address, [int(v) for v in set_values])
            return None

        return SimDevice(
            id=unit_id,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True)],
                [SimData(0, count=HR_COUNT, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=IR_COUNT, values=0, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=action,
        )

    def update(self) -> None:
        """Advance every pump to now and refresh the register snapshots."""
        t = self._clock() - self._t0
        for unit in self._units.values():
            unit.update(t)

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval)
            try:
                self.update()
            except Exception:  # pragma: no cover - a physics bug must not kill the server
                log.exception("pump simulator update failed")

    async def start(self) -> None:
        """Bind the port, serve in the background and start the physics updates."""
        if self._server is not None:
            return
        self.update()
        if self.serial_port is not None:
            serial = ModbusSerialServer(
                [self._device(uid) for uid in (0, *self._units)],  # 0: pymodbus' catch-all
                port=self.serial_port,
                baudrate=self.baudrate,
                ignore_missing_devices=True,
            )
            await serial.serve_forever(background=True)
            self._server = serial
            self._port = 0
            self._updater = asyncio.create_task(self._update_loop(), name=f"pump-sim-{self.serial_port}")
            log.info("pump simulator on serial %s units %s", self.serial_port, list(self._units))
            return
        # Unit id 0 is pymodbus' catch-all: requests for absent units land there.
        devices = [self._device(uid) for uid in (0, *self._units)]
        server = ModbusTcpServer(devices, address=(self.host, self._requested_port))
        await server.serve_forever(background=True)
        self._server = server
        self._port = self._bound_port(server) or self._requested_port
        self._updater = asyncio.create_task(self._update_loop(), name=f"pump-sim-{self._port}")
        log.info("pump simulator listening on %s:%s units %s", self.host, self._port, list(self._units))

    @staticmethod
    def _bound_port(server: ModbusTcpServer) -> int | None:
        sockets = getattr(server.transport, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else None

    async def stop(self) -> None:
        """Stop updating and close the listener and all client connections. Safe twice."""
        if self._updater is not None:
            self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._updater
            self._updater = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    async def __aenter__(self) -> PumpModbusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
