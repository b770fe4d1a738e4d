"""A Modbus TCP (or RTU serial) server that serves simulated equipment, one model per unit id.

The physics lives in :mod:`simulators.pump`, :mod:`simulators.chiller` and
:mod:`simulators.compressor`; the register maps in :mod:`simulators.maps`; the
injectable faults in :mod:`simulators.faults`. This module only turns readings
into registers and applies the comms faults. It uses pymodbus' ``SimDevice``/
``SimData`` datastore (the 3.16 API that survives into 4.0) and its ``action``
hook: every request first copies the latest snapshot into the addressed block,
and writes to the control registers are turned into physics calls. A background
task advances the physics every ``update_interval`` seconds.

P100 register map (addresses are 0-based PDU addresses; float32 is IEEE-754
big-endian, word order ABCD — high word first); the C200 chiller and A300
compressor maps are in :mod:`simulators.maps` and ``docs/gateway.md``::

    input registers (FC 4, read only)
      0-1   flow                 float32  m3/h
      2-3   discharge_pressure   float32  bar
      4-5   motor_current        float32  A
      6-7   bearing_temp         float32  degC
      8-9   vibration            float32  mm/s RMS
      10    status               uint16   bit0 running, bit1 fault active,
                                          bit2 bearing > 80 degC, bit3 vibration > 7.1 mm/s
      11-12 run_hours            uint32   hours x 100 (scale 0.01), high word first

    holding registers (FC 3 / 6 / 16, read-write), the same on every model
      0     fault_code           uint16   0 none, 1 the model's fault  (write to inject / clear)
      1     fault_rate           uint16   the fault's rate x 0.01 (pump: K/s, default 100 = 1.0 K/s)
      2     run_command          uint16   1 run, 0 stop
      3     latency_ms           uint16   generic "slow" fault: answer this many ms late (0 clears)

Coils and discrete inputs 0-15 are reserved: they read 0 and refuse writes.
A unit id with no model answers with exception 0x0B (gateway target failed to respond).
Comms faults of a unit (:class:`simulators.faults.FaultSet`): ``comms_loss``
leaves its requests unanswered (the client times out), ``slow`` delays every
answer, an ``illegal_block`` answers exception 2. :meth:`EquipmentModbusServer.unplug`
closes the port (connection refused) and :meth:`~EquipmentModbusServer.replug`
opens it again on the same port, while the physics keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.faults import FaultSet
from simulators.maps import MAPS, PUMP_MAP, map_values, model_kind
from simulators.pump import FAULTS, PumpModel

log = logging.getLogger(__name__)

IR_STATUS = 10
IR_RUN_HOURS = 11
IR_COUNT = PUMP_MAP.input_count
HR_FAULT_CODE = 0
HR_FAULT_RATE = 1
HR_RUN_COMMAND = 2
HR_LATENCY_MS = 3
HR_COUNT = 4
#: fault_code register values of the pump; index 0 is "no fault".
FAULT_CODES: tuple[str | None, ...] = (None, *FAULTS)
DEFAULT_FAULT_RATE = 1.0
#: Default fault rate per model kind (pump K/s, chiller %/s of charge, compressor K/s).
DEFAULT_FAULT_RATES = {"pump": 1.0, "chiller": 0.2, "compressor": 0.5}

_FC_READ_INPUT = 4
_FC_READ_HOLDING = 3
_FC_WRITE_HOLDING = (6, 16, 23)
_TABLE_OF_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input", 5: "coil", 6: "holding", 15: "coil",
                16: "holding", 23: "holding"}  # fmt: skip


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
    return PUMP_MAP.input_registers(map_values(pump, reading))


def holding_registers(model: Any, rate_setpoint: float, latency: float = 0.0) -> list[int]:
    """The control registers as they read back."""
    code = (None, *model.faults).index(model.fault)
    return [
        code,
        min(0xFFFF, round(rate_setpoint * 100)),
        1 if model.running else 0,
        min(0xFFFF, round(latency * 1000)),
    ]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (small race; fine for tests and demos)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Unit:
    """One model behind one unit id, its faults, and its latest register snapshot."""

    def __init__(self, model: Any, faults: FaultSet) -> None:
        self.model = model
        self.kind = model_kind(model)
        self.map = MAPS[self.kind]
        self.faults = faults
        self.fault_codes: tuple[str | None, ...] = (None, *model.faults)
        self.rate_setpoint = model.fault_rate or DEFAULT_FAULT_RATES[self.kind]
        self.ir: list[int] = [0] * self.map.input_count

    def update(self, t: float) -> None:
        values = map_values(self.model, self.model.step(t))
        self.ir = self.map.input_registers(self.faults.apply(t, values))

    def write(self, address: int, values: list[int]) -> ExcCodes | None:
        """Apply a write to the control registers; refuse values the model cannot take."""
        model = self.model
        for i, value in enumerate(values):
            reg = address + i
            if reg == HR_FAULT_CODE:
                if not 0 <= value < len(self.fault_codes):
                    return ExcCodes.ILLEGAL_VALUE
                fault = self.fault_codes[value]
                if fault is None:
                    model.clear_fault()
                else:
                    model.inject_fault(fault, self.rate_setpoint)
            elif reg == HR_FAULT_RATE:
                self.rate_setpoint = value / 100.0
                if model.fault:
                    model.fault_rate = self.rate_setpoint
            elif reg == HR_RUN_COMMAND:
                if value not in (0, 1):
                    return ExcCodes.ILLEGAL_VALUE
                model.running = bool(value)
            elif reg == HR_LATENCY_MS:
                self.faults.slow(value / 1000.0)
        return None


class EquipmentModbusServer:
    """Serve ``units`` (unit id -> pump, chiller or compressor model) on ``host:port``; ``port=0`` picks one.

    Lifecycle: ``await start()`` binds and starts updating, ``await stop()`` closes
    (safe to call twice; ``start()`` again binds the same port). Also an async
    context manager. ``faults[unit_id]`` is the unit's :class:`FaultSet`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        units: dict[int, Any] | None = None,
        *,
        faults: dict[int, FaultSet] | None = None,
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
        self.units: dict[int, Any] = units if units is not None else {1: PumpModel()}
        for unit_id in self.units:
            if not 1 <= unit_id <= 247:
                raise ValueError(f"unit id {unit_id} is outside 1..247")
        self.faults: dict[int, FaultSet] = {uid: FaultSet(seed=uid) for uid in self.units} | (faults or {})
        unknown = sorted(set(self.faults) - set(self.units))
        if unknown:
            raise ValueError(f"faults given for unit id(s) {unknown} that serve no model")
        self.update_interval = update_interval
        self._clock = clock
        self._t0 = clock()
        self._units = {uid: _Unit(m, self.faults[uid]) for uid, m in self.units.items()}
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._updater: asyncio.Task[None] | None = None

    @property
    def pumps(self) -> dict[int, Any]:
        """The models by unit id (the name predates chillers and compressors)."""
        return self.units

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
                    raise NoSuchIdException(f"no model at unit {unit_id}")
                # Like a TCP-to-serial gateway whose slave is absent (and no KeyError traceback).
                return ExcCodes.GATEWAY_NO_RESPONSE
            faults = unit.faults
            if faults.comms_loss:  # unanswered: pymodbus drops it (ignore_missing_devices)
                raise NoSuchIdException(f"unit {unit_id}: comms_loss fault")
            if faults.latency:
                await asyncio.sleep(faults.latency)
            table = _TABLE_OF_FC.get(func_code)
            if table and faults.illegal and faults.illegal_for(table, address, count):
                return ExcCodes.ILLEGAL_ADDRESS
            if func_code == _FC_READ_INPUT:
                registers[start_address : start_address + len(unit.ir)] = unit.ir
            elif func_code == _FC_READ_HOLDING:
                registers[start_address : start_address + HR_COUNT] = holding_registers(
                    unit.model, unit.rate_setpoint, faults.latency
                )
            elif func_code in _FC_WRITE_HOLDING and set_values is not None:
                return unit.write(address, [int(v) for v in set_values])
            return None

        unit = self._units.get(unit_id)
        ir_count = unit.map.input_count if unit is not None else IR_COUNT
        return SimDevice(
            id=unit_id,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True)],
                [SimData(0, count=HR_COUNT, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=ir_count, values=0, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=action,
        )

    def update(self) -> None:
        """Advance every model to now and refresh the register snapshots."""
        t = self._clock() - self._t0
        for unit in self._units.values():
            unit.update(t)

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval)
            try:
                self.update()
            except Exception:  # pragma: no cover - a physics bug must not kill the server
                log.exception("equipment simulator update failed")

    async def start(self) -> None:
        """Bind the port, serve in the background and start the physics updates."""
        if self._server is not None:
            return
        self.update()
        await self._listen()
        if self._updater is None:
            self._updater = asyncio.create_task(self._update_loop(), name=f"equipment-sim-{self._port}")

    async def _listen(self) -> None:
        devices = [self._device(uid) for uid in (0, *self._units)]  # 0: pymodbus' catch-all
        if self.serial_port is not None:
            serial = ModbusSerialServer(
                devices, port=self.serial_port, baudrate=self.baudrate, ignore_missing_devices=True
            )
            await serial.serve_forever(background=True)
            self._server = serial
            self._port = 0
            log.info("equipment simulator on serial %s units %s", self.serial_port, list(self._units))
            return
        # Unit id 0 is pymodbus' catch-all: requests for absent units land there (exception 0x0B).
        # ignore_missing_devices: a unit with a comms_loss fault raises NoSuchIdException -> silence.
        port = self._port or self._requested_port  # a restart binds the same port again
        server = ModbusTcpServer(devices, address=(self.host, port), ignore_missing_devices=True)
        await server.serve_forever(background=True)
        self._server = server
        self._port = self._bound_port(server) or port
        log.info("equipment simulator listening on %s:%s units %s", self.host, self._port, list(self._units))

    @staticmethod
    def _bound_port(server: ModbusTcpServer) -> int | None:
        sockets = getattr(server.transport, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else None

    async def unplug(self) -> None:
        """Close the port and every connection (clients get "connection refused"); physics keeps running."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()
            log.info("equipment simulator on port %s unplugged", self._port)

    async def replug(self) -> None:
        """Listen again on the same port after :meth:`unplug`."""
        if self._server is None:
            await self._listen()

    async def stop(self) -> None:
        """Stop updating and close the listener and all client connections. Safe twice."""
        if self._updater is not None:
            self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._updater
            self._updater = None
        await self.unplug()

    async def __aenter__(self) -> EquipmentModbusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class PumpModbusServer(EquipmentModbusServer):
    """:class:`EquipmentModbusServer` with its historical keyword ``pumps`` (any model is accepted)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, pumps: dict[int, Any] | None = None, **kw: Any) -> None:
        super().__init__(host, port, pumps, **kw)
