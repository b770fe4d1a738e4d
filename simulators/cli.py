"""``fieldwatch simulate …``: run simulated equipment from the command line.

``simulate pump`` (alias ``modbus``) serves models over Modbus TCP, ``simulate
pump-opcua`` (alias ``opcua``) over OPC-UA. ``--model pump|chiller|compressor|types``
picks the equipment (``types``: the type-test device of :mod:`simulators.typetest`);
``--fault`` starts the model's own fault after ``--fault-after`` seconds;
``--inject`` sets a generic fault (:func:`simulators.faults.parse_fault`), e.g.
``--inject 1:drift:oil_temp:rate=0.05`` or ``--inject 2:slow:latency=0.8``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Annotated, Any

import typer

from simulators.compressor import CompressorSpec
from simulators.faults import FaultSet, apply_fault, parse_fault
from simulators.maps import MAPS, make_model
from simulators.modbus_server import DEFAULT_FAULT_RATES, EquipmentModbusServer
from simulators.pump import PumpSpec

#: What ``--fault-rate`` does to each model (the physics in simulators/pump.py, chiller.py, compressor.py).
FAULT_RATE_HELP = (
    "Severity of the --fault, RATE: pump bearing_wear adds RATE K/s of heat to the bearing (it warms by "
    f"about RATE K/s at first and settles RATE×{PumpSpec().bearing_tau:.0f} K above normal; vibration keeps "
    "rising); compressor oil_degradation does the same to the oil (settling "
    f"RATE×{CompressorSpec().oil_tau:.0f} K above normal); chiller low_refrigerant loses RATE % of the "
    "refrigerant charge per second, down to half. Default per model: "
    + ", ".join(f"{m} {r}" for m, r in DEFAULT_FAULT_RATES.items())
    + "."
)

app = typer.Typer(help="Run simulated field equipment.", no_args_is_help=True)
MODELS = (*MAPS, "types")


@app.callback()
def _group() -> None:
    """Run simulated field equipment."""


log = logging.getLogger(__name__)

ModelOpt = Annotated[str, typer.Option(help=f"Equipment model: {', '.join(MODELS)}.")]
FaultOpt = Annotated[
    str | None, typer.Option(help="The model's own fault: bearing_wear (pump), low_refrigerant, oil_degradation.")
]
InjectOpt = Annotated[
    list[str] | None,
    typer.Option(help="Generic fault DEVICE:KIND[:TAG][:k=v,...], e.g. 1:stuck:flow, 1:slow:latency=0.5; repeat."),
]


def _check_model(model: str, fault: str | None) -> None:
    if model not in MODELS:
        raise typer.BadParameter(f"unknown model {model!r}; known: {', '.join(MODELS)}", param_hint="--model")
    if fault is not None:
        known = make_model(model).faults if model != "types" else ()
        if fault not in known:
            raise typer.BadParameter(
                f"model {model} has no fault {fault!r}; known: {', '.join(known) or 'none'}", param_hint="--fault"
            )


def _faults(specs: list[str], devices: list[Any], label: str) -> dict[Any, FaultSet]:
    """Parse ``--inject`` options into one FaultSet per device; errors name the option and the devices."""
    out: dict[Any, FaultSet] = {}
    for spec in specs:
        try:
            device, kind, params = parse_fault(spec)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--inject") from None
        key: Any = device
        if label == "unit":
            key = int(device) if device.isdigit() else device
        if key not in devices:
            raise typer.BadParameter(
                f"fault {spec!r}: no {label} {device!r}; this simulator has {', '.join(map(str, devices))}",
                param_hint="--inject",
            )
        try:
            apply_fault(out.setdefault(key, FaultSet(seed=len(out))), kind, params)
        except ValueError as exc:
            raise typer.BadParameter(f"fault {spec!r}: {exc}", param_hint="--inject") from None
    return out


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve_modbus(
    model: str,
    host: str,
    port: int,
    units: list[int],
    seed: int,
    fault: str | None,
    fault_after: float,
    fault_rate: float | None,
    update_interval: float,
    injects: list[str],
) -> None:
    if model == "types":
        from simulators.typetest import modbus_bank

        async with modbus_bank(host=host, port=port, unit_id=units[0]) as bank:
            typer.echo(f"type-test device on {host}:{bank.port}, unit id {units[0]} (Ctrl-C to stop)")
            await _until_signalled()
        return
    models = {uid: make_model(model, seed + i) for i, uid in enumerate(units)}
    faults = _faults(injects, units, "unit")
    server = EquipmentModbusServer(host, port, models, faults=faults, update_interval=update_interval)
    await server.start()
    typer.echo(f"{model} simulator on {host}:{server.port}, unit ids {units} (Ctrl-C to stop)")
    rate = fault_rate if fault_rate is not None else DEFAULT_FAULT_RATES[model]

    def start_fault() -> None:
        for uid, m in models.items():
            m.inject_fault(fault, rate=rate)
            typer.echo(f"unit {uid}: fault {fault} injected (rate {rate})")

    if fault:
        asyncio.get_running_loop().call_later(fault_after, start_fault)
    try:
        await _until_signalled()
    finally:
        await server.stop()


@app.command()
def pump(
    model: ModelOpt = "pump",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 5020,
    unit: Annotated[list[int] | None, typer.Option(help="Unit id of a device; repeat for more devices.")] = None,
    fault: FaultOpt = None,
    fault_after: Annotated[float, typer.Option(help="Seconds after start to inject the fault.")] = 0.0,
    fault_rate: Annotated[float | None, typer.Option(help=FAULT_RATE_HELP)] = None,
    inject: InjectOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise (device n gets seed + n).")] = 0,
    update_interval: Annotated[float, typer.Option(help="Seconds between physics updates.")] = 0.5,
) -> None:
    """Serve simulated equipment over Modbus TCP (register maps: docs/gateway.md)."""
    _check_model(model, fault)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = (model, host, port, unit or [1], seed, fault, fault_after, fault_rate, update_interval, inject or [])
    asyncio.run(_serve_modbus(*args))


async def _serve_opcua(model: str, host: str, port: int, names: list[str], seed: int, injects: list[str]) -> None:
    from simulators.opcua_server import EquipmentOpcUaServer  # asyncua only when asked for

    if model == "types":
        server = EquipmentOpcUaServer(host, port, {}, types=True)
        names = ["types"]
    else:
        faults = _faults(injects, names, "object")
        devices = {n: make_model(model, seed + i) for i, n in enumerate(names)}
        server = EquipmentOpcUaServer(host, port, devices, faults=faults)
    await server.start()
    typer.echo(f"OPC-UA {model} simulator at {server.endpoint}, objects {names} (Ctrl-C to stop)")
    try:
        await _until_signalled()
    finally:
        await server.stop()


@app.command("pump-opcua")
def pump_opcua(
    model: ModelOpt = "pump",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 4840,
    name: Annotated[list[str] | None, typer.Option(help="Object name of a device; repeat for more.")] = None,
    inject: InjectOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise (device n gets seed + n).")] = 0,
) -> None:
    """Serve simulated equipment over OPC-UA (address space: docs/gateway.md; faults: write fault_rate)."""
    _check_model(model, None)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_opcua(model, host, port, name or [f"{model}-1"], seed, inject or []))


app.command("modbus", help="Serve simulated equipment over Modbus TCP (same as `pump`).")(pump)
app.command("opcua", help="Serve simulated equipment over OPC-UA (same as `pump-opcua`).")(pump_opcua)
