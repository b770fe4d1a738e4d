"""A Modbus device with an explicit register map: every table, every encoding, holes and framings.

Where :mod:`simulators.modbus_server` models a pump, this serves whatever
values a test or a demo sets: holding and input registers, coils and discrete
inputs, and *holes* — addresses that answer exception 2 (illegal data address),
as real devices with sparse maps do. ``framer="rtu"`` speaks RTU frames over
TCP, like a serial device server. Values are written with
:func:`gateway.decode.encode` so every type and byte order can be served.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pymodbus import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

log = logging.getLogger(__name__)


def _blocks(values: dict[int, int] | dict[int, bool], holes: Iterable[int], kind: DataType) -> list[SimData]:
    """Contiguous SimData blocks from address 0 to the highest address, holes as INVALID blocks."""
    hole_set = set(holes)
    top = max([*values, *hole_set], default=0)
    out: list[SimData] = []
    run_start, run_valid, run_vals = 0, 0 not in hole_set, []  # type: ignore[var-annotated]
    for addr in range(top + 2):
        valid = addr not in hole_set and addr <= top
        if addr > top or valid != run_valid:
            if addr > run_start:
                if run_valid:
                    out.append(SimData(run_start, values=list(run_vals), datatype=kind))
                else:
                    out.append(SimData(run_start, count=addr - run_start, datatype=DataType.INVALID))
            run_start, run_valid, run_vals = addr, valid, []
        if valid:
            default: int | bool = False if kind == DataType.BITS else 0
            run_vals.append(values.get(addr, default))  # type: ignore[arg-type]
    return out


class RegisterBankServer:
    """Serve fixed tables on ``host:port`` (``port=0`` picks one); ``await start()`` / ``await stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unit_id: int = 1,
        holding: dict[int, int] | None = None,
        input_registers: dict[int, int] | None = None,
        coils: dict[int, bool] | None = None,
        discrete: dict[int, bool] | None = None,
        holes: Iterable[int] = (),
        framer: str = "socket",
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.unit_id = unit_id
        holes = list(holes)
        self._device = SimDevice(
            id=unit_id,
            simdata=(
                _blocks(coils or {0: False}, (), DataType.BITS),
                _blocks(discrete or {0: False}, (), DataType.BITS),
                _blocks(holding or {0: 0}, holes, DataType.REGISTERS),
                _blocks(input_registers or {0: 0}, (), DataType.REGISTERS),
            ),
        )
        self.framer = FramerType.RTU if framer == "rtu" else FramerType.SOCKET
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        server = ModbusTcpServer([self._device], address=(self.host, self._requested_port), framer=self.framer)
        await server.serve_forever(background=True)
        self._server = server
        sockets = getattr(server.transport, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._requested_port
        log.info("register bank on %s:%s (%s framing)", self.host, self.port, self.framer.value)

    async def stop(self) -> None:
        """Close the listener and connections. Safe twice."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def __aenter__(self) -> RegisterBankServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
