"""The chiller and compressor models: plausible, deterministic, step-size independent, with their faults;
and the register maps every model is served with decode back to the values through the gateway's decoder."""

from __future__ import annotations

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient

from fwcore.contract import Quality
from gateway.blockdecode import TagValue
from gateway.config import PROFILE_DIR, ModbusTcpDevice, OpcUaDevice, resolve_profile
from gateway.decode import WORD_ORDERS, decode, decode_string
from gateway.modbus import ModbusTcpDriver
from gateway.opcua import OpcUaDriver
from simulators.chiller import (
    STATUS_FAULT_ACTIVE as CH_FAULT,
)
from simulators.chiller import (
    STATUS_SUPERHEAT_HIGH,
    SUPERHEAT_ALARM_K,
    ChillerModel,
    saturation_pressure,
)
from simulators.compressor import OIL_ALARM_C, STATUS_LOADED, STATUS_OIL_HOT, CompressorModel
from simulators.maps import MAPS, make_model, map_values, model_kind
from simulators.modbus_server import EquipmentModbusServer
from simulators.opcua_server import EquipmentOpcUaServer
from simulators.typetest import OPCUA_VALUES, STRING_REGISTERS, TEXT, modbus_bank, modbus_layout
from tests.support.ports import free_port


def run(model, until: float, step: float = 1.0, start: float = 0.0) -> list[dict[str, float]]:
    out = []
    t = start
    while t <= until + 1e-9:
        out.append(model.step(t))
        t += step
    return out


@pytest.mark.parametrize("kind", ["pump", "chiller", "compressor"])
def test_same_seed_same_readings_other_seed_differs(kind: str) -> None:
    """Two models with one seed give identical readings; another seed gives other noise."""
    a, b, c = make_model(kind, 7), make_model(kind, 7), make_model(kind, 8)
    assert run(a, 30) == run(b, 30)
    assert run(c, 30) != run(make_model(kind, 7), 30)


def test_r134a_saturation_pressure_matches_tables() -> None:
    """The fitted saturation curve is within 2 % of R134a tables at 5, 25 and 40 °C."""
    for temp, table in ((5.0, 3.50), (25.0, 6.65), (40.0, 10.17)):
        assert saturation_pressure(temp) == pytest.approx(table, rel=0.02)


def test_healthy_chiller_holds_setpoint_with_plausible_pressures() -> None:
    """Healthy C200 over 15 minutes: supply near 7 °C, return 2-8 K warmer, 3-4 bar / 8-11 bar, superheat ~5 K."""
    chiller = ChillerModel(seed=1)
    for r in run(chiller, 900, 5.0):
        assert 6.7 < r["chw_supply_temp"] < 7.3
        assert 2.0 < r["chw_return_temp"] - r["chw_supply_temp"] < 8.0
        assert 3.0 < r["evap_pressure"] < 4.0
        assert 8.0 < r["cond_pressure"] < 11.0
        assert 50 < r["compressor_current"] < 120
        assert 3.5 < r["superheat"] < 6.5
    assert chiller.status_word() == 1


def test_low_refrigerant_raises_superheat_and_supply_temperature_and_clears() -> None:
    """A leak at 0.2 %/s: after 100 s superheat is past the 12 K alarm, supply is warmer, status says so."""
    chiller = ChillerModel(seed=2)
    healthy = run(chiller, 60)[-1]
    chiller.inject_fault("low_refrigerant", rate=0.2)
    leaking = run(chiller, 160, start=61)[-1]
    assert leaking["superheat"] > SUPERHEAT_ALARM_K > healthy["superheat"]
    assert leaking["chw_supply_temp"] > healthy["chw_supply_temp"] + 1.0
    assert leaking["evap_pressure"] < healthy["evap_pressure"]
    assert chiller.status_word() & (CH_FAULT | STATUS_SUPERHEAT_HIGH) == CH_FAULT | STATUS_SUPERHEAT_HIGH
    chiller.clear_fault()
    assert run(chiller, 170, start=161)[-1]["superheat"] < 6.5
    with pytest.raises(ValueError, match="known faults: low_refrigerant"):
        chiller.inject_fault("bearing_wear")


def test_compressor_cycles_between_load_and_unload_pressures() -> None:
    """The A300 loads at 6.5 bar and unloads at 7.5 bar; loaded it draws far more current than unloaded."""
    comp = CompressorModel(seed=3)
    readings = run(comp, 300, 0.5)
    pressures = [r["discharge_pressure"] for r in readings]
    assert min(pressures) > 6.4 and max(pressures) < 7.6
    loaded = [r for r in readings if r["loaded"]]
    unloaded = [r for r in readings if not r["loaded"]]
    assert len(loaded) > 50 and len(unloaded) > 50
    assert min(r["motor_current"] for r in loaded) > max(r["motor_current"] for r in unloaded) + 40
    assert all(60 < r["oil_temp"] < 90 and 2 < r["dew_point"] < 4 for r in readings)


def test_compressor_cycle_does_not_depend_on_the_step_size() -> None:
    """Stepping every 0.1 s or every 7 s reaches the same pressure and load state (switching is solved exactly)."""
    fine, coarse = CompressorModel(seed=4), CompressorModel(seed=4)
    run(fine, 140, 0.1)
    run(coarse, 140, 7.0)
    assert fine.pressure == pytest.approx(coarse.pressure, abs=1e-6)
    assert fine.is_loaded == coarse.is_loaded
    assert fine.oil_temp == pytest.approx(coarse.oil_temp, abs=0.3)


def test_oil_degradation_heats_the_oil_past_the_alarm() -> None:
    """Degraded oil at 0.5 K/s pushes the oil from ~77 °C past 100 °C within two minutes; clearing stops it."""
    comp = CompressorModel(seed=5)
    before = run(comp, 30)[-1]
    comp.inject_fault("oil_degradation", rate=0.5)
    after = run(comp, 150, start=31)[-1]
    assert before["oil_temp"] < 85 and after["oil_temp"] > OIL_ALARM_C
    assert comp.status_word() & STATUS_OIL_HOT
    comp.clear_fault()
    assert run(comp, 1500, 10, start=160)[-1]["oil_temp"] < 90


def test_restarting_counts_a_start_and_stopped_machines_draw_no_current() -> None:
    """run_command off then on: one more start; while off current is 0 and run hours do not grow."""
    for model in (ChillerModel(seed=6), CompressorModel(seed=6)):
        starts = model.starts
        run(model, 10)
        model.running = False
        hours = model.run_hours
        r = run(model, 20, start=11)[-1]
        assert r.get("compressor_current", r.get("motor_current")) == 0.0
        assert model.run_hours == hours
        model.running = True
        model.running = True  # already running: not a second start
        assert model.starts == starts + 1
        assert model.status_word() & 1


@pytest.mark.parametrize("kind", sorted(MAPS))
def test_each_map_decodes_back_to_the_model_values(kind: str) -> None:
    """Every entry of every model's map, encoded then decoded with the gateway's decoder, is the value
    within the entry's resolution (its scale) — the map and the profile agree on type, order and scale."""
    model = make_model(kind, 9)
    assert model_kind(model) == kind
    values = map_values(model, model.step(0.0))
    if kind == "compressor":
        values["loaded"] = 1.0
    regs = MAPS[kind].input_registers(values)
    for e in MAPS[kind].entries:
        got = decode(regs[e.address : e.address + e.count], e.data_type, e.word_order, e.scale)
        tolerance = e.scale / 2 + 1e-9 if not e.data_type.startswith("float") else abs(values[e.name]) * 1e-6
        assert got == pytest.approx(values[e.name], abs=tolerance), e
    status = MAPS[kind].entries[[e.name for e in MAPS[kind].entries].index("status")]
    if kind == "compressor":
        assert int(regs[status.address]) & STATUS_LOADED


async def poll_once(driver: ModbusTcpDriver | OpcUaDriver) -> dict[str, TagValue]:
    """Connect, read every tag once through the gateway's driver, close; values by tag name."""
    await driver.connect()
    try:
        return {v.tag.name: v for v in await driver.poll()}
    finally:
        await driver.close()


# --- shipped profiles against the simulators -----------------------------------------------------------

PROFILES = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
KIND_OF_MODEL = {m.model: kind for kind, m in MAPS.items()}
#: Plausible healthy values per model and tag (bounds of what a working machine reads).
PLAUSIBLE: dict[str, dict[str, tuple[float, float]]] = {
    "pump": {"flow": (100, 140), "discharge_pressure": (5, 7), "motor_current": (35, 50), "bearing_temp": (50, 70),
             "vibration": (1, 4), "status": (1, 1), "run_hours": (1_000, 30_001), "fault_code": (0, 0),
             "fault_rate": (0, 0)},
    "chiller": {"chw_supply_temp": (6.5, 7.5), "chw_return_temp": (8, 13), "evap_pressure": (3, 4),
                "cond_pressure": (8, 11), "compressor_current": (50, 120), "superheat": (3, 7), "status": (1, 1),
                "running": (1, 1), "superheat_high": (0, 0), "run_hours": (2_000, 40_001), "starts": (500, 5_000),
                "fault_code": (0, 0), "fault_rate": (0, 0)},
    "compressor": {"discharge_pressure": (6.4, 7.6), "oil_temp": (60, 90), "motor_current": (30, 100),
                   "vibration": (0.8, 2.2), "dew_point": (2, 4), "status": (1, 9), "oil_hot": (0, 0),
                   "run_hours": (1_000, 50_001), "starts": (200, 20_000), "loaded": (0, 1), "fault_code": (0, 0),
                   "fault_rate": (0, 0)},
}  # fmt: skip


def test_every_shipped_profile_has_a_simulated_model_and_both_protocols() -> None:
    """Each of pump, chiller and compressor ships a Modbus and an OPC-UA profile, and each profile names a model."""
    assert {p for p in PROFILES} >= {m.profile for m in MAPS.values()} | {m.opcua_profile for m in MAPS.values()}
    for name in PROFILES:
        profile = resolve_profile(name)
        assert profile.version == "1", name
        assert profile.model in KIND_OF_MODEL, f"{name}: model {profile.model!r} has no simulator"


@pytest.mark.parametrize("name", [p for p in PROFILES if not p.endswith("-opcua")])
async def test_modbus_profile_matches_the_map_and_polls_good_plausible_values(name: str) -> None:
    """A Modbus profile's tags sit where the simulator's map puts them (type, order, scale); polling the
    simulator with it gives every tag GOOD and within a healthy machine's range."""
    profile = resolve_profile(name)
    kind = KIND_OF_MODEL[profile.model]
    entries = {e.name: e for e in MAPS[kind].entries}
    for tag in profile.tags:
        e = entries.get(tag.name)
        if e is not None:
            assert (tag.register_type, tag.address, tag.data_type, tag.word_order, tag.scale) == (
                "input", e.address, e.data_type, e.word_order, e.scale
            ), tag.name  # fmt: skip
    async with EquipmentModbusServer(units={3: make_model(kind, 11)}, update_interval=0.05) as sim:
        device = ModbusTcpDevice.model_validate(
            {"name": "dev", "host": "127.0.0.1", "port": sim.port, "unit_id": 3, "profile": name}
        )
        values = await poll_once(ModbusTcpDriver(device))
    assert set(values) == {t.name for t in profile.tags}
    for tag, v in values.items():
        lo, hi = PLAUSIBLE[kind][tag]
        assert v.quality == Quality.GOOD and lo <= v.value <= hi, (tag, v.value, v.quality)


async def test_opcua_profiles_poll_good_plausible_values() -> None:
    """One OPC-UA simulator with a pump, a chiller and a compressor: each -opcua profile reads every tag GOOD
    and within a healthy machine's range."""
    server = EquipmentOpcUaServer(
        "127.0.0.1", free_port(), {kind: make_model(kind, 12) for kind in MAPS}, update_interval=0.1
    )
    await server.start()  # returns with the first physics update written: the values are there to poll
    try:
        for kind, m in MAPS.items():
            device = OpcUaDevice.model_validate(
                {"name": kind, "protocol": "opcua", "endpoint": server.endpoint, "root": f"2:{kind}",
                 "profile": m.opcua_profile, "mode": "poll", "timeout": 2.0}
            )  # fmt: skip
            values = await poll_once(OpcUaDriver(device))
            assert set(values) == {t.name for t in resolve_profile(m.opcua_profile).tags}
            for tag, v in values.items():
                lo, hi = PLAUSIBLE[kind][tag]
                assert v.quality == Quality.GOOD and lo <= v.value <= hi, (kind, tag, v.value, v.quality)
    finally:
        await server.stop()


# --- the type-test device --------------------------------------------------------------------------------


async def test_type_test_device_decodes_every_type_and_order_exactly_over_modbus() -> None:
    """Every numeric type in every byte order, bits, bools (register, coil, discrete) read exactly through
    the gateway's driver and decoder; strings in every order read back exactly with decode_string."""
    layout = modbus_layout()
    async with modbus_bank() as bank:
        device = ModbusTcpDevice.model_validate(
            {"name": "types", "host": "127.0.0.1", "port": bank.port, "tags": layout.tags}
        )
        values = await poll_once(ModbusTcpDriver(device))
        # The gateway does not poll string tags: read their registers with a plain pymodbus client.
        client = AsyncModbusTcpClient("127.0.0.1", port=bank.port)
        assert await client.connect()
        try:
            texts = {}
            for name, (address, order) in layout.strings.items():
                regs = (await client.read_holding_registers(address, count=STRING_REGISTERS)).registers
                texts[name] = decode_string(regs, order)
        finally:
            client.close()
    assert {n: v.value for n, v in values.items()} == layout.expected  # exact, not approx
    assert all(v.quality == Quality.GOOD for v in values.values())
    assert len(layout.expected) == 8 * 4 + 7
    assert texts == {f"string-{o.lower()}": TEXT for o in WORD_ORDERS}


async def test_type_test_device_reads_every_opcua_type_exactly() -> None:
    """Each OPC-UA scalar type under 2:types reads its exact value through the gateway's OPC-UA driver;
    the String node is BAD_DECODE there (telemetry carries numbers) and reads right over plain asyncua."""
    server = EquipmentOpcUaServer("127.0.0.1", free_port(), {}, types=True)
    await server.start()
    try:
        tags = [{"name": name, "path": f"2:{name}"} for name, _, _ in OPCUA_VALUES]
        device = OpcUaDevice.model_validate(
            {"name": "types", "protocol": "opcua", "endpoint": server.endpoint, "root": "2:types", "tags": tags,
             "mode": "poll", "timeout": 2.0}
        )  # fmt: skip
        values = await poll_once(OpcUaDriver(device))
        async with Client(server.endpoint) as client:
            text = await client.get_node(f"ns={server.ns};s=types.string").read_value()
    finally:
        await server.stop()
    expected = {name: float(value) for name, _, value in OPCUA_VALUES if name != "string"}
    assert {n: v.value for n, v in values.items() if n != "string"} == expected
    assert all(v.quality == Quality.GOOD for n, v in values.items() if n != "string")
    assert values["string"].quality == Quality.BAD_DECODE
    assert text == TEXT
