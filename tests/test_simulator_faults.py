"""Generic injectable faults: the pure fault layer, then each fault as the gateway sees it through the real
simulators (Modbus and OPC-UA), the writable latency register, and ``fieldwatch simulate --inject``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from fwcore.contract import Quality
from gateway import Gateway, parse_config
from gateway.config import ModbusTcpDevice, OpcUaDevice
from gateway.errors import DeviceError, DeviceTimeout
from gateway.modbus import ModbusTcpDriver
from gateway.opcua import OpcUaDriver
from simulators.chiller import ChillerModel
from simulators.compressor import CompressorModel
from simulators.faults import FaultSet, parse_fault
from simulators.modbus_server import HR_LATENCY_MS, EquipmentModbusServer
from simulators.opcua_server import EquipmentOpcUaServer
from tests.support.clocks import FakeClock
from tests.support.ports import free_port
from tests.support.waits import wait_until_async

# --- the pure layer ---------------------------------------------------------------------------------------


def test_drift_grows_linearly_from_injection_on_one_tag_only() -> None:
    """drift rate 0.5/s: +0 at injection, +5 after 10 s, +10 after 20 s; other tags untouched."""
    f = FaultSet()
    f.drift("a", 0.5)
    got = [f.apply(t, {"a": 1.0, "b": 2.0}) for t in (100.0, 110.0, 120.0)]
    assert got == [{"a": 1.0, "b": 2.0}, {"a": 6.0, "b": 2.0}, {"a": 11.0, "b": 2.0}]


def test_spike_hits_with_its_probability_and_magnitude_and_is_seeded() -> None:
    """spike p=0.2 m=30: about 20 % of 2,000 readings are exactly ±30 off, the rest exact; same seed, same spikes."""
    runs = []
    for _ in range(2):
        f = FaultSet(seed=3)
        f.spike("*", probability=0.2, magnitude=30.0)
        runs.append([f.apply(float(t), {"x": 10.0})["x"] for t in range(2000)])
    assert runs[0] == runs[1]
    off = [v for v in runs[0] if v != 10.0]
    assert 300 < len(off) < 500
    assert set(off) == {40.0, -20.0}


def test_stuck_freezes_the_value_at_injection_and_clear_releases_it() -> None:
    """stuck keeps the first value it sees; clearing the fault passes live values again."""
    f = FaultSet()
    f.stuck("x")
    assert [f.apply(t, {"x": t})["x"] for t in (1.0, 2.0, 3.0)] == [1.0, 1.0, 1.0]
    f.clear("stuck", "x")
    assert f.apply(4.0, {"x": 4.0}) == {"x": 4.0}
    assert not f.active


def test_step_offsets_one_tag_from_injection_on() -> None:
    """step m=-8 reads 8 lower from the first reading after injection; other tags untouched."""
    f = FaultSet()
    f.step("a", -8.0)
    assert [f.apply(t, {"a": t, "b": 1.0}) for t in (10.0, 11.0)] == [{"a": 2.0, "b": 1.0}, {"a": 3.0, "b": 1.0}]


def test_variance_adds_seeded_noise_of_its_sigma() -> None:
    """variance sigma=2: the tag's added noise has a standard deviation near 2, repeats with the seed, mean near 0."""
    runs = []
    for _ in range(2):
        f = FaultSet(seed=5)
        f.variance("x", 2.0)
        runs.append([f.apply(float(t), {"x": 10.0, "y": 1.0}) for t in range(4000)])
    assert runs[0] == runs[1] and {r["y"] for r in runs[0]} == {1.0}
    noise = [r["x"] - 10.0 for r in runs[0]]
    mean = sum(noise) / len(noise)
    sd = (sum((n - mean) ** 2 for n in noise) / len(noise)) ** 0.5
    assert abs(mean) < 0.15 and 1.9 < sd < 2.1


def test_decouple_mirrors_true_changes_around_the_value_at_injection() -> None:
    """decouple: true 5, 6, 8, 3 reads 5, 4, 2, 7 — the same range, the opposite direction (broken correlation)."""
    f = FaultSet()
    f.decouple("x")
    assert [f.apply(t, {"x": v})["x"] for t, v in enumerate([5.0, 6.0, 8.0, 3.0])] == [5.0, 4.0, 2.0, 7.0]


def test_illegal_block_overlap_is_per_table_and_range() -> None:
    """A block answers exception 2 for any read touching it in its own table only."""
    f = FaultSet()
    f.illegal_block("input", 6, 2)
    assert f.illegal_for("input", 0, 7) and f.illegal_for("input", 7, 1)
    assert not f.illegal_for("input", 0, 6) and not f.illegal_for("input", 8, 4)
    assert not f.illegal_for("holding", 6, 1)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1:drift:bearing_temp:rate=0.05", ("1", "drift", {"tag": "bearing_temp", "rate": 0.05})),
        ("1:spike:*:p=0.1,m=20", ("1", "spike", {"tag": "*", "probability": 0.1, "magnitude": 20.0})),
        ("chiller-1:stuck:superheat", ("chiller-1", "stuck", {"tag": "superheat"})),
        ("2:slow:latency=0.8", ("2", "slow", {"latency": 0.8})),
        ("2:illegal_block:input=4-7", ("2", "illegal_block", {"table": "input", "start": 4, "count": 4})),
        ("3:comms_loss", ("3", "comms_loss", {})),
        ("1:step:flow:m=-8", ("1", "step", {"tag": "flow", "magnitude": -8.0})),
        ("1:variance:vibration:sigma=0.5", ("1", "variance", {"tag": "vibration", "sigma": 0.5})),
        ("1:decouple:motor_current", ("1", "decouple", {"tag": "motor_current"})),
    ],
)
def test_parse_fault_examples(spec: str, expected: tuple) -> None:
    """The documented --inject forms parse to device, kind and parameters."""
    assert parse_fault(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("drift", "expected DEVICE:KIND"),
        ("1:melt:x", "unknown kind 'melt'"),
        ("1:drift:rate=1", "needs a tag name"),
        ("1:drift:x", "missing rate"),
        ("1:slow:latency=fast", "'fast' is not a number"),
        ("1:stuck:x:rate=2", "stuck takes no parameters"),
        ("1:illegal_block", "input=4-7"),
        ("1:step:x", "missing magnitude"),
        ("1:variance:x:rate=1", "variance takes sigma, not 'rate'"),
    ],
)
def test_parse_fault_errors_say_what_is_wrong(spec: str, message: str) -> None:
    """A bad --inject names the spec and the problem."""
    with pytest.raises(ValueError, match=message):
        parse_fault(spec)


# --- as the gateway sees them over Modbus -----------------------------------------------------------------


def _device(port: int, unit_id: int, profile: str, **kw: object) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {"name": f"dev-{unit_id}", "host": "127.0.0.1", "port": port, "unit_id": unit_id, "profile": profile, **kw}
    )


async def _poll(driver: ModbusTcpDriver) -> dict[str, tuple[float, int]]:
    return {v.tag.name: (v.value, v.quality) for v in await driver.poll()}


async def test_sensor_faults_as_polled_through_the_gateway_driver() -> None:
    """Through the C200 profile: a drifting superheat gains rate x elapsed, a stuck compressor current
    never moves while the machine's load does, a spiking return temperature reads 40 K off."""
    clock = FakeClock()  # the test decides model time
    chiller = ChillerModel(seed=1)
    sim = EquipmentModbusServer(units={1: chiller}, update_interval=3600, clock=clock)
    await sim.start()
    driver = ModbusTcpDriver(_device(sim.port, 1, "chiller-c200"))
    await driver.connect()
    try:
        faults = sim.faults[1]
        faults.drift("superheat", 0.1)
        faults.stuck("compressor_current")
        faults.spike("chw_return_temp", probability=1.0, magnitude=40.0)
        seen = []
        for t in (100.0, 200.0, 300.0):  # a third of the load cycle: condenser pressure would move
            clock.t = t
            sim.update()
            seen.append(await _poll(driver))
    finally:
        await driver.close()
        await sim.stop()
    superheat = [s["superheat"][0] for s in seen]
    assert superheat[1] - superheat[0] == pytest.approx(10.0, abs=0.8)
    assert superheat[2] - superheat[0] == pytest.approx(20.0, abs=0.8)
    assert len({s["compressor_current"][0] for s in seen}) == 1
    assert abs(chiller.last["compressor_current"] - seen[0]["compressor_current"][0]) > 1.0  # the real one moved
    assert all(abs(s["chw_return_temp"][0] - 10.5) > 30 for s in seen)
    assert all(q == Quality.GOOD for s in seen for _, q in s.values())


async def test_illegal_block_is_split_around_and_the_other_tags_stay_good() -> None:
    """An illegal block over the superheat register: the planner splits the merged read, superheat alone is
    BAD_EXCEPTION, every other tag is GOOD, and the next poll reuses the split."""
    async with EquipmentModbusServer(units={1: ChillerModel(seed=2)}, update_interval=0.05) as sim:
        sim.faults[1].illegal_block("input", 6, 1)
        driver = ModbusTcpDriver(_device(sim.port, 1, "chiller-c200"))
        assert len(driver.plan) == 2  # one input read, one holding read
        await driver.connect()
        try:
            first = await _poll(driver)
            splits = driver.splits
            second = await _poll(driver)
        finally:
            await driver.close()
    for values in (first, second):
        bad = {name for name, (_, q) in values.items() if q != Quality.GOOD}
        assert bad == {"superheat"} and values["superheat"][1] == Quality.BAD_EXCEPTION
    assert splits >= 2 and driver.splits == splits


async def test_comms_loss_times_out_and_clearing_it_brings_answers_back() -> None:
    """comms_loss: the unit's requests go unanswered (DeviceTimeout); the other unit on the port still answers;
    cleared, the unit answers again."""
    models = {1: CompressorModel(seed=1), 2: CompressorModel(seed=2)}
    async with EquipmentModbusServer(units=models, update_interval=0.05) as sim:
        sim.faults[1].comms_loss = True
        lost = ModbusTcpDriver(_device(sim.port, 1, "compressor-a300", timeout=0.3))
        other = ModbusTcpDriver(_device(sim.port, 2, "compressor-a300", timeout=0.3))
        await lost.connect()
        await other.connect()
        try:
            started = time.monotonic()
            with pytest.raises(DeviceTimeout):
                await lost.poll()
            assert time.monotonic() - started >= 0.25
            assert all(q == Quality.GOOD for _, q in (await _poll(other)).values())
            sim.faults[1].clear("comms_loss")
            await lost.connect()
            assert all(q == Quality.GOOD for _, q in (await _poll(lost)).values())
        finally:
            await lost.close()
            await other.close()


async def test_latency_register_slows_the_unit_and_zero_clears_it() -> None:
    """Writing 300 to holding register 3 delays every answer by 0.3 s; writing 0 removes the delay."""
    async with EquipmentModbusServer(units={1: ChillerModel(seed=3)}, update_interval=0.05) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2)
        await client.connect()
        try:
            assert not (await client.write_register(HR_LATENCY_MS, 300, device_id=1)).isError()
            assert sim.faults[1].latency == 0.3
            started = time.monotonic()
            rr = await client.read_holding_registers(0, count=4, device_id=1)
            assert time.monotonic() - started >= 0.3 and rr.registers[HR_LATENCY_MS] == 300
            await client.write_register(HR_LATENCY_MS, 0, device_id=1)
            started = time.monotonic()
            await client.read_input_registers(0, count=4, device_id=1)
            assert time.monotonic() - started < 0.2
        finally:
            client.close()


async def test_a_slow_device_does_not_delay_the_other_device_of_the_gateway(tmp_path: Path, uid: str) -> None:
    """Unit 1 answers 0.6 s late, unit 2 promptly, poll every 0.2 s: over 2.5 s the fast device completes
    about 12 polls at millisecond latency while the slow one manages a few — each on its own task."""
    models = {1: ChillerModel(seed=4), 2: ChillerModel(seed=5)}
    async with EquipmentModbusServer(units=models, update_interval=0.05) as sim:
        sim.faults[1].slow(0.6)
        config = parse_config(
            {
                "gateway": f"gw-{uid}", "site": f"site-{uid}", "poll_interval": 0.2, "state_dir": str(tmp_path),
                "mqtt_url": "mqtt://127.0.0.1:1", "health_interval": 60,  # no broker needed: batches stay on disk
                "devices": [
                    {"name": "slow", "host": "127.0.0.1", "port": sim.port, "unit_id": 1, "profile": "chiller-c200",
                     "timeout": 2.0},
                    {"name": "fast", "host": "127.0.0.1", "port": sim.port, "unit_id": 2, "profile": "chiller-c200"},
                ],
            }
        )  # fmt: skip
        gateway = Gateway(config)
        await gateway.start()
        try:
            await asyncio.sleep(2.5)  # time must pass: polls are counted over a fixed 2.5 s
        finally:
            await gateway.stop()
    slow, fast = gateway.stats.devices["slow"], gateway.stats.devices["fast"]
    assert fast.polls >= 9 and fast.poll_seconds_total / fast.polls < 0.1
    assert 1 <= slow.polls <= 3 and slow.last_latency >= 1.2  # two reads (input, holding), 0.6 s each
    assert fast.online and slow.online


# --- OPC-UA -----------------------------------------------------------------------------------------------


async def test_opcua_setfault_method_stuck_and_comms_loss_as_the_gateway_sees_them() -> None:
    """Over OPC-UA: SetFault(stuck, oil_temp) freezes oil_temp; SetFault(comms_loss) turns every measured tag BAD;
    ClearFaults() brings live GOOD values back."""
    server = EquipmentOpcUaServer("127.0.0.1", free_port(), {"comp-1": CompressorModel(seed=6)}, update_interval=0.05)
    await server.start()
    device = OpcUaDevice.model_validate(
        {"name": "comp-1", "protocol": "opcua", "endpoint": server.endpoint, "root": "2:comp-1",
         "profile": "compressor-a300-opcua", "mode": "poll", "timeout": 2.0}
    )  # fmt: skip
    driver = OpcUaDriver(device)
    try:
        async with Client(server.endpoint) as client:
            obj = client.get_node(ua.NodeId("comp-1", server.ns))
            args = [ua.Variant(0.0, ua.VariantType.Double)] * 2
            await obj.call_method(f"{server.ns}:SetFault", "stuck", "oil_temp", *args)
            await driver.connect()
            stuck = []
            for _ in range(4):
                # Time must pass: this simulator steps on the wall clock, and "stuck" means unmoved while it does.
                await asyncio.sleep(0.15)
                values = {v.tag.name: v for v in await driver.poll()}
                stuck.append((values["oil_temp"].value, values["motor_current"].value))
            assert len({o for o, _ in stuck}) == 1 and len({c for _, c in stuck}) > 1
            await obj.call_method(f"{server.ns}:SetFault", "comms_loss", "", *args)
            lost = await wait_until_async(
                driver.poll,
                done=lambda vs: all(v.quality >= Quality.BAD for v in vs if v.tag.name != "fault_rate"),
                what="the next update to apply comms_loss",
            )
            assert all(v.quality >= Quality.BAD for v in lost if v.tag.name != "fault_rate")  # the sim's own knob
            await obj.call_method(f"{server.ns}:ClearFaults")
            back = await wait_until_async(
                driver.poll,
                done=lambda vs: all(v.quality == Quality.GOOD for v in vs),
                what="the next update to clear the faults",
            )
            assert all(v.quality == Quality.GOOD for v in back), [(v.tag.name, v.quality) for v in back]
            with pytest.raises(ua.UaStatusCodeError):
                await obj.call_method(f"{server.ns}:SetFault", "slow", "", *args)  # Modbus-only fault
    finally:
        await driver.close()
        await server.stop()


# --- from the command line ----------------------------------------------------------------------------------


async def test_simulate_cli_serves_a_chiller_with_an_injected_stuck_sensor() -> None:
    """`fieldwatch simulate modbus --model chiller --unit 4 --inject 4:stuck:superheat` serves a C200 on unit 4
    that the chiller-c200 profile reads GOOD, with superheat frozen."""
    port = free_port()
    cmd = [sys.executable, "-m", "fieldwatch.cli", "simulate", "modbus", "--model", "chiller", "--port", str(port),
           "--unit", "4", "--update-interval", "0.05", "--inject", "4:stuck:superheat"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        driver = ModbusTcpDriver(_device(port, 4, "chiller-c200"))

        async def connected() -> bool:
            assert proc.poll() is None, f"simulator exited with {proc.returncode}"
            await driver.connect()
            return True

        await wait_until_async(connected, 15, what=f"the simulator on port {port}", interval=0.1, ignore=(DeviceError,))
        try:
            polls = []
            for _ in range(3):
                polls.append(await _poll(driver))
                # Time must pass: "stuck" means unmoved while the simulator's wall-clock physics steps on.
                await asyncio.sleep(0.2)
        finally:
            await driver.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)  # also closes the stderr pipe
    assert all(q == Quality.GOOD for p in polls for _, q in p.values())
    assert len({p["superheat"][0] for p in polls}) == 1
    assert len({p["compressor_current"][0] for p in polls}) > 1
