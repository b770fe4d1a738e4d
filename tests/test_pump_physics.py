"""The simulated pump's physics: nominal operating point, determinism and the bearing-wear fault."""

from __future__ import annotations

import pytest

from simulators.pump import (
    BEARING_ALARM_C,
    MEASUREMENTS,
    STATUS_BEARING_HOT,
    STATUS_FAULT_ACTIVE,
    STATUS_RUNNING,
    PumpModel,
    PumpSpec,
)


def run(pump: PumpModel, seconds: float, dt: float = 0.5) -> list[dict[str, float]]:
    return [pump.step(i * dt) for i in range(int(seconds / dt) + 1)]


@pytest.mark.parametrize(
    ("name", "nominal", "tolerance"),
    [
        ("flow", 120.0, 6.0),
        ("discharge_pressure", 6.0, 0.3),
        ("motor_current", 42.0, 2.0),
        ("bearing_temp", 60.0, 1.5),
        ("vibration", 2.5, 0.4),
    ],
)
def test_healthy_pump_stays_near_its_nominal_operating_point(name: str, nominal: float, tolerance: float) -> None:
    """A healthy pump's readings average to the nameplate values and never stray far."""
    readings = [r[name] for r in run(PumpModel(seed=3), 120)]
    assert abs(sum(readings) / len(readings) - nominal) < tolerance / 2
    assert all(abs(v - nominal) < tolerance for v in readings)


def test_same_seed_and_times_give_the_same_readings() -> None:
    """The model is deterministic given seed and step times; another seed differs."""
    assert run(PumpModel(seed=7), 10) == run(PumpModel(seed=7), 10)
    assert run(PumpModel(seed=7), 10) != run(PumpModel(seed=8), 10)


def test_readings_are_noisy() -> None:
    """Consecutive readings differ (plausible sensor noise), so anomaly rules see a real signal."""
    flows = [r["flow"] for r in run(PumpModel(seed=1), 5)]
    assert len(set(flows)) == len(flows)


def test_step_returns_every_measurement() -> None:
    """step() gives exactly the five measurements of the register map."""
    assert set(PumpModel().step(0.0)) == set(MEASUREMENTS)


def test_bearing_wear_crosses_80_degrees_within_30_seconds_at_rate_1() -> None:
    """With the default fault rate a demo sees the bearing pass 80 °C in under 30 s, and vibration rise."""
    pump = PumpModel(seed=2)
    pump.step(0.0)
    pump.inject_fault("bearing_wear", rate=1.0)
    readings = [pump.step(t / 2) for t in range(1, 61)]
    crossing = next(i for i, r in enumerate(readings) if r["bearing_temp"] > BEARING_ALARM_C) / 2
    assert 10 < crossing < 30
    assert readings[-1]["vibration"] > readings[0]["vibration"] + 2.0
    assert pump.status_word() & STATUS_BEARING_HOT
    assert pump.status_word() & STATUS_FAULT_ACTIVE


def test_fault_rate_scales_the_heating() -> None:
    """A faster fault heats the bearing faster."""
    temps = {}
    for rate in (0.5, 2.0):
        pump = PumpModel(seed=2)
        pump.step(0.0)
        pump.inject_fault("bearing_wear", rate=rate)
        temps[rate] = pump.step(20.0)["bearing_temp"]
    assert temps[2.0] > temps[0.5] + 10


def test_clearing_the_fault_lets_the_bearing_cool_back() -> None:
    """After clear_fault the bearing cools towards its healthy temperature and vibration returns."""
    pump = PumpModel(seed=4)
    pump.step(0.0)
    pump.inject_fault("bearing_wear", rate=2.0)
    hot = pump.step(30.0)
    pump.clear_fault()
    cooled = pump.step(30.0 + 600.0)
    assert hot["bearing_temp"] > 90
    assert abs(cooled["bearing_temp"] - 60.0) < 2.0
    assert cooled["vibration"] < 3.5
    assert pump.status_word() == STATUS_RUNNING


def test_thermal_lag_does_not_depend_on_step_size() -> None:
    """Exact integration: at constant load, stepping 1 s or 10 s to the same time gives the same bearing state."""
    steady = PumpSpec(demand_swing=0.0)
    fine, coarse = PumpModel(seed=5, spec=steady), PumpModel(seed=5, spec=steady)
    for pump in (fine, coarse):
        pump.step(0.0)
        pump.inject_fault("bearing_wear", rate=1.0)
    for t in range(1, 41):
        fine.step(float(t))
    for t in range(10, 41, 10):
        coarse.step(float(t))
    assert fine.bearing_temp == pytest.approx(coarse.bearing_temp, rel=1e-9)


def test_run_hours_accumulate_while_running() -> None:
    """Run hours start at a seeded realistic value and grow with running time."""
    pump = PumpModel(seed=6)
    start = pump.run_hours
    assert 1_000 <= start <= 30_000
    pump.step(0.0)
    pump.step(3600.0)
    assert pump.run_hours == pytest.approx(start + 1.0)


@pytest.mark.parametrize(
    ("kind", "rate"), [("cavitation", 1.0), ("bearing_wear", -1.0), ("bearing_wear", float("nan"))]
)
def test_unknown_faults_and_bad_rates_are_refused(kind: str, rate: float) -> None:
    """inject_fault names what it does not accept instead of simulating nonsense."""
    with pytest.raises(ValueError):
        PumpModel().inject_fault(kind, rate=rate)


def test_the_fault_rate_help_says_what_the_physics_does() -> None:
    """`simulate pump --help` promises what a RATE does, and the models do exactly that."""
    import typer

    from simulators.chiller import ChillerModel
    from simulators.cli import FAULT_RATE_HELP, app
    from simulators.compressor import CompressorModel

    pump_cmd = typer.main.get_command(app).commands["pump"]  # type: ignore[attr-defined]  # a click Group
    text = next(p.help for p in pump_cmd.params if p.name == "fault_rate")
    assert "adds RATE K/s of heat to the bearing" in text and "settles RATE×120 K above normal" in text
    assert "settling RATE×300 K above normal" in text and "loses RATE % of the refrigerant charge per second" in text
    assert text == FAULT_RATE_HELP and "down to half" in text and "pump 1.0" in text

    rate, steps = 0.1, [i * 10.0 for i in range(401)]  # 4000 s: both lags have settled
    for make, fault, tag, settle_k in (
        (PumpModel, "bearing_wear", "bearing_temp", 120.0),
        (CompressorModel, "oil_degradation", "oil_temp", 300.0),
    ):
        healthy, faulty = make(seed=3), make(seed=3)
        faulty.step(0.0), healthy.step(0.0)
        faulty.inject_fault(fault, rate=rate)
        last = [(healthy.step(t), faulty.step(t)) for t in steps[1:]][-1]
        assert last[1][tag] - last[0][tag] == pytest.approx(rate * settle_k, abs=0.5), make.__name__

    chiller = ChillerModel(seed=3)
    chiller.step(0.0)
    chiller.inject_fault("low_refrigerant", rate=0.2)
    chiller.step(100.0)
    assert chiller.charge == pytest.approx(0.8)  # 0.2 %/s for 100 s
    chiller.step(1000.0)
    assert chiller.charge == 0.5
