"""``fieldwatch gateway check`` against the real Modbus and OPC-UA pump simulators, and profile versions."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import gateway.config as gconfig
from fwcore.contract import Quality
from gateway.blockdecode import TagValue
from gateway.check import EXIT_BAD, EXIT_OK, CheckReport, device_result, quality_text
from gateway.cli import app
from gateway.config import parse_config
from gateway.errors import ConfigError
from simulators import PumpModbusServer, PumpModel
from simulators.opcua_server import PumpOpcUaServer
from tests.support import opcua_node, serial_line
from tests.support.opcua_node import NodeOpcUaServer
from tests.support.ports import closed_port, free_port

pty_pair, serial_pump = (
    serial_line.pty_pair,
    serial_line.serial_pump,
)  # the fixtures, shared with test_gateway_modbus_rtu
node_opcua = opcua_node.node_opcua  # a second OPC-UA server implementation, one per module

#: Physics updates far apart, so the registers the check reads are the ones the test compares with.
FROZEN = 3600.0


@pytest.fixture
async def modbus_sim() -> AsyncIterator[PumpModbusServer]:
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1)}, update_interval=FROZEN)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def opcua_sim() -> AsyncIterator[PumpOpcUaServer]:
    # start() writes the first physics update before it returns; FROZEN keeps it the only one.
    server = PumpOpcUaServer("127.0.0.1", free_port(), {"pump-9": PumpModel(seed=3)}, update_interval=FROZEN)
    await server.start()
    yield server
    await server.stop()


def _write(tmp_path: Path, devices: list[dict[str, Any]]) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"gateway": "gw-check", "site": "site-check", "devices": devices}))
    return path


async def _check(*args: str) -> tuple[int, str]:
    """Run the real CLI in a thread (it owns its event loop; the simulators live on ours)."""
    result = await asyncio.to_thread(CliRunner().invoke, app, ["check", *args])
    return result.exit_code, result.output


def _modbus(port: int, name: str = "pump-1", **kw: Any) -> dict[str, Any]:
    return {"name": name, "host": "127.0.0.1", "port": port, "unit_id": 1, "timeout": 1.0, **kw}


def _float(regs: list[int]) -> float:
    return struct.unpack(">f", struct.pack(">HH", *regs))[0]


async def test_good_config_shows_the_simulators_decoded_values(
    modbus_sim: PumpModbusServer, opcua_sim: PumpOpcUaServer, tmp_path: Path
) -> None:
    """Every tag of a Modbus and an OPC-UA pump reads good, equal to what the simulators serve; exit 0."""
    opcua = {"name": "pump-9", "protocol": "opcua", "endpoint": opcua_sim.endpoint, "root": "2:pump-9",
             "profile": "pump-p100-opcua@1", "timeout": 2.0}  # fmt: skip
    cfg = _write(tmp_path, [_modbus(modbus_sim.port, profile="pump-p100@1"), opcua])
    code, out = await _check("--config", str(cfg), "--json")
    assert code == EXIT_OK, out
    doc = json.loads(out)
    devices = {d["device"]: d for d in doc["devices"]}
    assert all(d["online"] and d["good"] for d in devices.values())
    modbus_tags = {t["tag"]: t for t in devices["pump-1"]["tags"]}
    ir = modbus_sim._units[1].ir
    assert modbus_tags["flow"]["value"] == pytest.approx(_float(ir[0:2]))
    assert modbus_tags["bearing_temp"]["value"] == pytest.approx(_float(ir[6:8]))
    assert modbus_tags["run_hours"]["value"] == pytest.approx(((ir[11] << 16) | ir[12]) * 0.01)
    assert modbus_tags["flow"]["unit"] == "m3/h" and modbus_tags["flow"]["reason"] == "good"
    assert len(modbus_tags) == 8
    served = await opcua_sim._vars[("pump-9", "bearing_temp")].read_value()
    opcua_tags = {t["tag"]: t for t in devices["pump-9"]["tags"]}
    assert opcua_tags["bearing_temp"]["value"] == pytest.approx(served)
    assert 40 < served < 80
    assert devices["pump-1"]["profile"] == "pump-p100@1"
    assert devices["pump-9"]["profile"] == "pump-p100-opcua@1"
    assert devices["pump-1"]["latency_s"] > 0

    code, table = await _check("--config", str(cfg))
    assert code == EXIT_OK
    assert f"{_float(ir[6:8]):.6g} degC" in table
    assert "online " in table and "pump-p100@1" in table and "all devices online, all tags good" in table


async def test_unknown_data_type_names_file_device_and_tag(tmp_path: Path) -> None:
    """A config error exits 1 before any I/O and says file: devices[name].tags[name].field."""
    tags = [{"name": "flow", "register": "input", "address": 0, "data_type": "float33"}]
    cfg = _write(tmp_path, [_modbus(closed_port(), tags=tags)])
    code, out = await _check("--config", str(cfg))
    assert code == 1
    assert f"{cfg}: devices[pump-1].tags[flow].data_type: Input should be" in out
    code, out = await _check("--config", str(cfg), "--json")
    assert code == 1
    assert json.loads(out)["errors"][0].startswith(f"{cfg}: devices[pump-1].tags[flow].data_type")


async def test_a_device_on_a_closed_port_is_offline_with_the_reason(
    modbus_sim: PumpModbusServer, tmp_path: Path
) -> None:
    """A dead device shows offline with why, its tags bad; the live device still reads good; exit 2."""
    dead = closed_port()
    cfg = _write(
        tmp_path, [_modbus(modbus_sim.port, profile="pump-p100"), _modbus(dead, "pump-dead", profile="pump-p100")]
    )
    code, out = await _check("--config", str(cfg), "--json", "--timeout", "3")
    assert code == EXIT_BAD, out
    devices = {d["device"]: d for d in json.loads(out)["devices"]}
    assert devices["pump-1"]["good"]
    gone = devices["pump-dead"]
    assert not gone["online"] and gone["latency_s"] is None
    assert gone["error"].startswith("DeviceNotConnected: cannot connect")
    assert {t["reason"] for t in gone["tags"]} == {"bad: not connected"}
    assert all(t["quality"] == Quality.BAD_NOT_CONNECTED and t["value"] is None for t in gone["tags"])
    code, table = await _check("--config", str(cfg), "--timeout", "3")
    assert code == EXIT_BAD
    assert "offline pump-dead" in table and f"127.0.0.1:{dead}" in table


async def test_an_illegal_address_is_a_bad_tag_with_the_exception_reason(
    modbus_sim: PumpModbusServer, tmp_path: Path
) -> None:
    """One tag the device refuses reads 'bad: exception response'; the device is online; exit 2."""
    tags = [{"name": "flow", "register": "input", "address": 0, "data_type": "float32"},
            {"name": "ghost", "register": "input", "address": 500}]  # fmt: skip
    cfg = _write(tmp_path, [_modbus(modbus_sim.port, tags=tags)])
    code, out = await _check("--config", str(cfg), "--json")
    assert code == EXIT_BAD
    (dev,) = json.loads(out)["devices"]
    by_tag = {t["tag"]: t for t in dev["tags"]}
    assert dev["online"] and by_tag["flow"]["reason"] == "good"
    assert by_tag["ghost"]["reason"] == "bad: exception response" and by_tag["ghost"]["value"] is None


async def test_opcua_values_show_with_status_and_quality_as_received(
    node_opcua: NodeOpcUaServer, tmp_path: Path
) -> None:
    """node-opcua, subscribe mode: Uncertain and BadOutOfRange show their value and status; an unknown node says so."""
    tags = [{"name": "steady", "node": node_opcua.node("steady_1")},
            {"name": "uncertain", "node": node_opcua.node("uncertain")},
            {"name": "out_of_range", "node": node_opcua.node("out_of_range")},
            {"name": "ghost", "node": "ns=1;s=no_such_node"}]  # fmt: skip
    device = {"name": "plant-1", "protocol": "opcua", "endpoint": node_opcua.endpoint, "timeout": 2.0, "tags": tags}
    cfg = _write(tmp_path, [device])
    code, out = await _check("--config", str(cfg), "--json")
    assert code == EXIT_BAD, out
    (dev,) = json.loads(out)["devices"]
    assert dev["online"]
    by_tag = {t["tag"]: (t["value"], t["quality"], t["status"], t["reason"]) for t in dev["tags"]}
    assert by_tag == {
        "steady": (1.5, Quality.GOOD, "Good", "good"),
        "uncertain": (21.5, Quality.UNCERTAIN, "UncertainLastUsableValue", "uncertain: UncertainLastUsableValue"),
        "out_of_range": (999.0, Quality.BAD_OUT_OF_RANGE, "BadOutOfRange", "bad: BadOutOfRange"),
        "ghost": (None, Quality.BAD_EXCEPTION, "BadNodeIdUnknown", "bad: BadNodeIdUnknown"),
    }
    code, table = await _check("--config", str(cfg))
    assert code == EXIT_BAD
    assert "21.5" in table and "uncertain: UncertainLastUsableValue" in table
    assert "999" in table and "bad: BadOutOfRange" in table and "clamped" not in table
    assert "bad: BadNodeIdUnknown" in table


def test_results_keep_every_configured_tag_and_judge_the_whole_report() -> None:
    """Pure aggregation: a tag the driver skipped is bad, a failed device marks all tags, exit codes follow."""
    cfg = parse_config({"gateway": "g", "site": "s", "devices": [{"name": "p", "host": "h", "profile": "pump-p100"}]})
    dev = cfg.devices[0]
    flow = next(t for t in dev.tags if t.name == "flow")
    partial = device_result(dev, [TagValue(flow, 12.5, Quality.GOOD)], "", 0.01)
    assert [t.tag for t in partial.tags] == [t.name for t in dev.tags]
    assert partial.tags[0].value == 12.5 and partial.tags[1].reason == "bad: no value returned"
    assert not partial.good
    failed = device_result(dev, None, "timeout: no answer within 1 s", None, Quality.BAD_TIMEOUT)
    assert {t.reason for t in failed.tags} == {"bad: timeout"} and failed.error.startswith("timeout")
    assert CheckReport("f", "g", "s", None, [partial]).exit_code == EXIT_BAD
    ok = device_result(dev, [TagValue(t, 1.0) for t in dev.tags], "", 0.01)
    assert CheckReport("f", "g", "s", None, [ok]).exit_code == EXIT_OK
    assert quality_text(Quality.BAD_TIMEOUT) == "bad: timeout" and quality_text(99) == "bad: quality 99"
    assert quality_text(Quality.UNCERTAIN) == "uncertain"  # not good, but not bad either


# --- profile versions ---------------------------------------------------------------------------


def _device_cfg(**device: Any) -> dict[str, Any]:
    return {"gateway": "g", "site": "s", "devices": [{"name": "pump-7", "host": "h", **device}]}


@pytest.mark.parametrize("pin", ["pump-p100", "pump-p100@1"])
def test_a_matching_or_absent_pin_loads_the_profile(pin: str) -> None:
    """Unpinned configs keep working; a pin equal to the profile's version loads it; both report name@version."""
    dev = parse_config(_device_cfg(profile=pin)).devices[0]
    assert dev.profile_label == "pump-p100@1" and dev.profile_version == "1"
    assert len(dev.tags) == 8


def test_a_pin_mismatch_names_the_device_and_both_versions() -> None:
    """pump-p100@2 against the installed version 1 is refused, saying which device and which versions."""
    with pytest.raises(ConfigError) as err:
        parse_config(_device_cfg(profile="pump-p100@2"), source="site.yaml")
    msg = str(err.value)
    assert msg.startswith("site.yaml: devices[pump-7]:")
    assert "pins profile 'pump-p100' at version 2" in msg and "installed profile is version 1" in msg


def test_pins_match_on_version_components(tmp_path: Path) -> None:
    """@1 accepts 1.4.2, @1.4 accepts 1.4.2 but not 1.40, a full pin must be exact."""
    prof = tmp_path / "chiller.yaml"
    tags = [{"name": "t", "address": 0}]
    for version, pin, ok in [("1.4.2", "1", True), ("1.4.2", "1.4", True), ("1.40", "1.4", False), ("2", "1", False)]:
        prof.write_text(yaml.safe_dump({"profile": "chiller", "version": version, "tags": tags}))
        gconfig._load_profile_file.cache_clear()
        cfg = _device_cfg(profile=f"{prof}@{pin}")
        if ok:
            assert parse_config(cfg).devices[0].profile_label == f"{prof}@{version}"
        else:
            with pytest.raises(ConfigError, match=f"at version {pin} but the installed profile is version {version}"):
                parse_config(cfg)


def test_built_in_profiles_need_a_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile shipped in gateway/profiles without 'version:' is refused with what to add; others may omit it."""
    monkeypatch.setattr(gconfig, "PROFILE_DIR", tmp_path)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump({"profile": "old", "tags": [{"name": "t", "address": 0}]}))
    gconfig._load_profile_file.cache_clear()
    with pytest.raises(ConfigError, match=r"has no 'version:'; add e\.g\. 'version: 1'"):
        parse_config(_device_cfg(profile="old"))
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    (elsewhere / "old.yaml").write_text((tmp_path / "old.yaml").read_text())
    dev = parse_config(_device_cfg(profile=str(elsewhere / "old.yaml"))).devices[0]
    assert dev.profile_version is None and dev.profile_label == str(elsewhere / "old.yaml")


def test_every_shipped_profile_has_a_version() -> None:
    """Each file in gateway/profiles loads and carries a version."""
    for path in sorted(gconfig.PROFILE_DIR.glob("*.yaml")):
        assert gconfig.resolve_profile(path.stem).version, path


async def test_rtu_units_on_one_serial_line_are_checked_in_turn(
    serial_pump: PumpModbusServer,
    pty_pair: tuple[str, str],
    tmp_path: Path,
) -> None:
    """Two units on one serial port share the bus: the present pump reads right, the absent one times out."""
    line = {"protocol": "modbus_rtu", "serial_port": pty_pair[1], "baudrate": 19200, "timeout": 0.5,
            "profile": "pump-p100"}  # fmt: skip
    cfg = _write(tmp_path, [{"name": "pump-1", "unit_id": 1, **line}, {"name": "pump-5", "unit_id": 5, **line}])
    code, out = await _check("--config", str(cfg), "--json", "--timeout", "5")
    assert code == EXIT_BAD, out
    devices = {d["device"]: d for d in json.loads(out)["devices"]}
    ir = serial_pump._units[1].ir
    assert devices["pump-1"]["good"] and devices["pump-1"]["address"].startswith(f"{pty_pair[1]} unit 1")
    flow = next(t for t in devices["pump-1"]["tags"] if t["tag"] == "flow")
    assert flow["value"] == pytest.approx(_float(ir[0:2]))
    assert not devices["pump-5"]["online"] and {t["reason"] for t in devices["pump-5"]["tags"]} == {"bad: timeout"}
