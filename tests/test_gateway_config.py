"""Gateway config loading: profiles, overrides, and errors that name the bad device or tag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "gateway" / "examples" / "site-gateway.yaml"


def cfg(*devices: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"gateway": "gw-1", "site": "site-a", "devices": list(devices), **top}


def dev(name: str = "pump-1", **kw: Any) -> dict[str, Any]:
    return {"name": name, "protocol": "modbus_tcp", "host": "127.0.0.1", "port": 5020, **kw}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_example_config_loads() -> None:
    """The shipped example is valid and expands its profiles into tags."""
    config = load_config(EXAMPLE)
    assert [d.name for d in config.devices] == ["pump-1", "pump-2", "pump-3"]
    assert {t.name for t in config.devices[0].tags} >= {"flow", "bearing_temp", "vibration", "run_hours"}


def test_profile_tags_follow_the_pump_register_map() -> None:
    """pump-p100 maps the simulator's input registers: float32 ABCD pairs from 0, status at 10."""
    tags = {t.name: t for t in parse_config(cfg(dev(profile="pump-p100"))).devices[0].tags}
    assert (tags["bearing_temp"].register_type, tags["bearing_temp"].address) == ("input", 6)
    assert tags["bearing_temp"].data_type == "float32"
    assert tags["status"].address == 10
    assert (tags["run_hours"].data_type, tags["run_hours"].scale) == ("uint32", 0.01)


def test_overrides_change_one_tag_of_a_profile_for_one_device() -> None:
    """Per-instance overrides replace fields of a profile tag without touching other devices."""
    config = parse_config(
        cfg(
            dev("a", profile="pump-p100", overrides={"flow": {"scale": 0.5, "unit": "l/s"}}),
            dev("b", profile="pump-p100"),
        )
    )
    flow_a = next(t for t in config.devices[0].tags if t.name == "flow")
    flow_b = next(t for t in config.devices[1].tags if t.name == "flow")
    assert (flow_a.scale, flow_a.unit, flow_a.address) == (0.5, "l/s", 0)
    assert (flow_b.scale, flow_b.unit) == (1.0, "m3/h")


def test_a_profile_can_be_a_path_relative_to_the_config(tmp_path: Path) -> None:
    """profile: ./my.yaml is read next to the gateway config file."""
    (tmp_path / "my.yaml").write_text("profile: my\ntags:\n  - {name: t, register: input, address: 3}\n")
    (tmp_path / "gw.yaml").write_text("gateway: gw-1\nsite: s\ndevices:\n  - {name: d, host: h, profile: ./my.yaml}\n")
    assert load_config(tmp_path / "gw.yaml").devices[0].tags[0].address == 3


def test_mqtt_url_is_optional() -> None:
    """Without mqtt_url the gateway falls back to settings (checked in the agent)."""
    assert parse_config(cfg(dev(profile="pump-p100"))).mqtt_url is None


@pytest.mark.parametrize(
    ("data", "must_mention"),
    [
        (cfg(dev("p1", profile="pump-p100"), dev("p1", profile="pump-p100")), ["duplicate device", "'p1'"]),
        (
            cfg(dev(tags=[{"name": "t1", "address": 1}, {"name": "t1", "address": 2}])),
            ["pump-1", "duplicate tag", "'t1'"],
        ),
        (cfg(dev(tags=[{"name": "t1", "address": 70000}])), ["devices[pump-1].tags[t1].address"]),
        (cfg(dev(tags=[{"name": "t1", "address": 1, "data_type": "bcd"}])), ["devices[pump-1].tags[t1].data_type"]),
        (cfg(dev(tags=[{"name": "t1", "address": 1, "word_order": "WXYZ"}])), ["tags[t1].word_order"]),
        (cfg(dev(profile="no-such-model")), ["pump-1", "no-such-model", "pump-p100"]),
        (cfg(dev(profile="pump-p100", overrides={"nope": {"scale": 2}})), ["pump-1", "'nope'"]),
        (cfg(dev(profile="pump-p100", overrides={"flow": {"address": -1}})), ["pump-1", "'flow'"]),
        (cfg(dev()), ["pump-1", "no tags"]),
        (cfg(dev(protocol="bacnet", profile="pump-p100")), ["devices[pump-1].protocol"]),
        (cfg(dev(profile="pump-p100"), gateway="bad gateway"), ["gateway", "'bad gateway'"]),
        (cfg(dev(profile="pump-p100"), site="a/b"), ["site"]),
        (cfg(dev(profile="pump-p100"), poll_interval=0), ["poll_interval"]),
        (cfg(), ["devices"]),
        (cfg(dev(tags=[{"name": "c", "register": "coil", "address": 1}])), ["tags[c]", "data_type bool"]),
        (cfg(dev(tags=[{"name": "b", "address": 1, "data_type": "bit"}])), ["tags[b]", "'bit'"]),
        (cfg(dev(tags=[{"name": "b", "address": 1, "data_type": "bit", "bit": 16}])), ["tags[b].bit"]),
        (cfg(dev(tags=[{"name": "s", "address": 1, "data_type": "string"}])), ["tags[s]", "numbers"]),
        (cfg(dev(tags=[{"name": "m", "address": 1, "min": 5, "max": 1}])), ["tags[m]", "min 5.0 is above max"]),
    ],
    ids=[
        "dup-device",
        "dup-tag",
        "address",
        "data-type",
        "word-order",
        "unknown-profile",
        "override-unknown-tag",
        "override-invalid",
        "no-tags",
        "protocol",
        "gateway-slug",
        "site-slug",
        "poll-interval",
        "no-devices",
        "coil-not-bool",
        "bit-without-index",
        "bit-16",
        "string",
        "min-above-max",
    ],
)
def test_invalid_configs_are_refused_with_a_message_naming_the_entry(
    data: dict[str, Any], must_mention: list[str]
) -> None:
    """Each mistake is reported with the device/tag (or key) it concerns."""
    message = error_of(data)
    for fragment in must_mention:
        assert fragment in message, message


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    """Broken YAML or a missing file is a ConfigError naming the file, not a traceback."""
    bad = tmp_path / "gw.yaml"
    bad.write_text("gateway: [unclosed\n")
    with pytest.raises(ConfigError, match=r"gw\.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
