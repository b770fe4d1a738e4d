"""``fieldwatch simulate …``: run simulated equipment from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Annotated

import typer

from simulators.modbus_server import PumpModbusServer
from simulators.pump import FAULTS, PumpModel

app = typer.Typer(help="Run simulated field equipment.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run simulated field equipment."""


log = logging.getLogger(__name__)


async def _serve_pumps(
    host: str,
    port: int,
    units: list[int],
    seed: int,
    fault: str | None,
    fault_after: float,
    fault_rate: float,
    update_interval: float,
) -> None:
    pumps = {uid: PumpModel(seed + i) for i, uid in enumerate(units)}
    server = PumpModbusServer(host, port, pumps, update_interval=update_interval)
    await server.start()
    typer.echo(f"pump simulator on {host}:{server.port}, unit ids {units} (Ctrl-C to stop)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    def start_fault() -> None:
        for uid, pump in pumps.items():
            pump.inject_fault(fault or "bearing_wear", rate=fault_rate)
            typer.echo(f"unit {uid}: fault {fault} injected (rate {fault_rate} K/s)")

    if fault:
        loop.call_later(fault_after, start_fault)
    try:
        await stop.wait()
    finally:
        await server.stop()


@app.command()
def pump(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 5020,
    unit: Annotated[list[int] | None, typer.Option(help="Unit id of a pump; repeat for more pumps.")] = None,
    fault: Annotated[str | None, typer.Option(help=f"Fault to inject: {', '.join(FAULTS)}.")] = None,
    fault_after: Annotated[float, typer.Option(help="Seconds after start to inject the fault.")] = 0.0,
    fault_rate: Annotated[float, typer.Option(help="Bearing heating of the fault, K/s.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the noise (pump n gets seed + n).")] = 0,
    update_interval: Annotated[float, typer.Option(help="Seconds between physics updates.")] = 0.5,
) -> None:
    """Serve simulated P100 pumps over Modbus TCP (register map: docs/gateway.md)."""
    if fault is not None and fault not in FAULTS:
        raise typer.BadParameter(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}", param_hint="--fault")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_pumps(host, port, unit or [1], seed, fault, fault_after, fault_rate, update_interval))


async def _serve_opcua_pumps(host: str, port: int, names: list[str], seed: int) -> None:
    from simulators.opcua_server import PumpOpcUaServer  # asyncua only when asked for

    server = PumpOpcUaServer(host, port, {n: PumpModel(seed + i) for i, n in enumerate(names)})
    await server.start()
    typer.echo(f"OPC-UA pump simulator at {server.endpoint}, objects {names} (Ctrl-C to stop)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


@app.command("pump-opcua")
def pump_opcua(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 4840,
    name: Annotated[list[str] | None, typer.Option(help="Object name of a pump; repeat for more pumps.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise (pump n gets seed + n).")] = 0,
) -> None:
    """Serve simulated P100 pumps over OPC-UA (address space: docs/gateway.md; faults: write fault_rate)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_opcua_pumps(host, port, name or ["pump-1"], seed))
