"""Remote config over the real Mosquitto with the real pump simulator: apply, reject, roll back, persist."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from fieldwatch.mosquitto_auth import mosquitto_hash, regenerate_acl, regenerate_passwords
from fieldwatch.provision import topic_prefix
from fwcore.contract import decode_batch, topic
from gateway import Gateway, parse_config
from gateway.config import load_config
from gateway.remote_config import (
    RemoteConfigRejected,
    diff_devices,
    load_effective_config,
    parse_remote,
    persist,
    remote_path,
)
from ingest.provisioning import GatewayLogin
from simulators import PumpModbusServer, PumpModel
from tests.support.brokers import PrivateMosquitto
from tests.support.mqtt import MQTT_URL, Watcher
from tests.support.ports import closed_port
from tests.support.waits import wait_until_async


@pytest.fixture
async def sim() -> AsyncIterator[PumpModbusServer]:
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1), 2: PumpModel(seed=2)}, update_interval=0.1)
    await server.start()
    yield server
    await server.stop()


def _pump(port: int, name: str, unit: int = 1, **kw: Any) -> dict[str, Any]:
    return {"name": name, "host": "127.0.0.1", "port": port, "unit_id": unit, "profile": "pump-p100@1", **kw}


def _doc(uid: str, tmp_path: Path, version: str, *devices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "gateway": f"gw-{uid}",
        "site": f"site-{uid}",
        "config_version": version,
        "poll_interval": 0.2,
        "state_dir": str(tmp_path / "state"),
        "devices": list(devices),
        **extra,
    }


def _status_with(outcome: str, version: str) -> Callable[[str, bytes, bool], bool]:
    def match(t: str, p: bytes, r: bool) -> bool:
        if not t.endswith("/status") or not p:  # an empty payload clears a retained status: not a status
            return False
        last = (orjson.loads(p).get("config") or {}).get("last") or {}
        return last.get("outcome") == outcome and last.get("version") == version

    return match


async def _points_from(watcher: Watcher, device: str, timeout: float = 8.0) -> list[int]:
    """Wait for a telemetry batch carrying ``device``; return the seqs of every batch seen until then."""
    seqs: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        _, payload, _ = await watcher.next(lambda t, p, r: t.endswith("/telemetry"), deadline - time.monotonic())
        batch = decode_batch(payload)
        seqs.append(batch.seq)
        if any(p.device == device for p in batch.points):
            return seqs


class _Running:
    """A gateway started from ``gw.yaml`` in tmp_path, a watcher on its prefix, and a config publisher."""

    def __init__(self, uid: str, tmp_path: Path, doc: dict[str, Any]) -> None:
        self.path = tmp_path / "gw.yaml"
        self.path.write_text(yaml.safe_dump(doc))
        self.gw = Gateway(load_config(self.path), mqtt_url=MQTT_URL, config_path=self.path)
        self.watcher = Watcher(f"fw/v1/site-{uid}/gw-{uid}/#")
        self.config_topic = topic(f"site-{uid}", f"gw-{uid}", "config")

    def publish(self, payload: bytes) -> None:
        self.watcher.client.publish(self.config_topic, payload, qos=1, retain=True).wait_for_publish(5)

    async def close(self) -> None:
        await self.gw.stop()
        self.watcher.client.publish(self.config_topic, b"", qos=1, retain=True).wait_for_publish(5)  # clear
        self.watcher.close()


@pytest.fixture
async def running(sim: PumpModbusServer, uid: str, tmp_path: Path) -> AsyncIterator[_Running]:
    r = _Running(uid, tmp_path, _doc(uid, tmp_path, "1", _pump(sim.port, "pump-1")))
    await r.gw.start()
    await r.gw.wait_connected()
    await _points_from(r.watcher, "pump-1")
    yield r
    await r.close()


async def test_an_added_device_starts_without_touching_the_others(
    running: _Running, sim: PumpModbusServer, uid: str, tmp_path: Path
) -> None:
    """A JSON config adding pump-2 is applied: its points arrive, pump-1's task is the same object
    (started once), the buffer and the batch sequence carry on, and the config is saved for restarts."""
    gw = running.gw
    task_before, buffer_before = gw._device_tasks["pump-1"], gw._buffer
    new = _doc(uid, tmp_path, "2", _pump(sim.port, "pump-1"), _pump(sim.port, "pump-2", unit=2))
    running.publish(json.dumps(new).encode())
    _, payload, _ = await running.watcher.next(_status_with("applied", "2"), 10.0)
    status = orjson.loads(payload)
    assert status["config"]["version"] == "2"
    assert status["config"]["last"]["added"] == ["pump-2"] and status["config"]["last"]["changed"] == []
    assert status["profiles"] == {"pump-1": "pump-p100@1", "pump-2": "pump-p100@1"}
    seqs = await _points_from(running.watcher, "pump-2")
    more = await _points_from(running.watcher, "pump-1")
    assert gw._device_tasks["pump-1"] is task_before and not task_before.done()
    assert gw.device_starts == {"pump-1": 1, "pump-2": 1}
    assert gw._buffer is buffer_before
    every = seqs + more
    assert every == list(range(every[0], every[0] + len(every))), "the sequence continues without a gap or reset"
    assert gw.config.config_version == "2" and gw.stats.device_online["pump-2"]
    saved = load_effective_config(running.path)  # what `fieldwatch gateway run gw.yaml` starts with next time
    assert saved.config_version == "2" and [d.name for d in saved.devices] == ["pump-1", "pump-2"]
    assert yaml.safe_load(running.path.read_text())["config_version"] == "1", "the original file is never edited"


async def test_an_invalid_config_is_rejected_and_the_old_one_keeps_running(
    running: _Running, sim: PumpModbusServer, uid: str, tmp_path: Path
) -> None:
    """A YAML config with an unknown data type is rejected with the device and tag named; nothing restarts."""
    gw = running.gw
    task_before = gw._device_tasks["pump-1"]
    gw.publish_status()  # what the status says before any remote config: profiles and the file's version
    _, payload, _ = await running.watcher.next(lambda t, p, r: t.endswith("/status") and b"profiles" in p)
    assert orjson.loads(payload)["profiles"] == {"pump-1": "pump-p100@1"}
    assert orjson.loads(payload)["config"] == {"version": "1", "last": None}
    bad_tags = [{"name": "flow", "register": "input", "address": 0, "data_type": "float33"}]
    bad = _doc(uid, tmp_path, "2-bad", _pump(sim.port, "pump-1"), {**_pump(sim.port, "pump-x"), "tags": bad_tags})
    del bad["devices"][1]["profile"]
    running.publish(yaml.safe_dump(bad).encode())
    _, payload, _ = await running.watcher.next(_status_with("rejected", "2-bad"), 10.0)
    error = orjson.loads(payload)["config"]["last"]["error"]
    assert "remote config 2-bad: devices[pump-x].tags[flow].data_type: Input should be" in error
    assert orjson.loads(payload)["config"]["version"] == "1"
    running.publish(json.dumps({**_doc(uid, tmp_path, "3", _pump(sim.port, "pump-1")), "poll_interval": 5}).encode())
    _, payload, _ = await running.watcher.next(_status_with("rejected", "3"), 10.0)
    assert "changes poll_interval" in orjson.loads(payload)["config"]["last"]["error"]
    await _points_from(running.watcher, "pump-1")
    assert gw._device_tasks["pump-1"] is task_before and gw.device_starts == {"pump-1": 1}
    assert gw.config.config_version == "1" and not remote_path(running.path).exists()


async def test_a_config_whose_new_device_never_answers_is_rolled_back(
    running: _Running, sim: PumpModbusServer, uid: str, tmp_path: Path
) -> None:
    """A device on a closed port fails the post-apply check: the gateway rolls back and says why."""
    gw = running.gw
    task_before = gw._device_tasks["pump-1"]
    dead = closed_port()
    new = _doc(uid, tmp_path, "2", _pump(sim.port, "pump-1"), _pump(dead, "pump-dead"), remote_apply_timeout=1.5)
    running.publish(json.dumps(new).encode())
    _, payload, _ = await running.watcher.next(_status_with("rolled_back", "2"), 15.0)
    status = orjson.loads(payload)
    assert "pump-dead did not answer within 1.5 s" in status["config"]["last"]["error"]
    assert f"127.0.0.1:{dead}" in status["config"]["last"]["error"]
    assert status["config"]["version"] == "1" and "pump-dead" not in status["devices"]
    assert gw.config.config_version == "1" and set(gw._device_tasks) == {"pump-1"}
    assert gw._device_tasks["pump-1"] is task_before
    await _points_from(running.watcher, "pump-1")
    assert not remote_path(running.path).exists()
    running.publish(json.dumps(new).encode())  # the same version again (e.g. retained on reconnect): ignored
    assert await gw.remote.handle(json.dumps(new).encode()) is None


# --- pure parts -------------------------------------------------------------------------------


def _cfg(*devices: dict[str, Any], **extra: Any) -> Any:
    return parse_config({"gateway": "g", "site": "s", "devices": list(devices), **extra})


def test_diff_names_added_removed_changed_and_unchanged_devices() -> None:
    """Devices are compared by name on every resolved field; order in the file does not matter."""
    a, b, c = (_pump(502, n) for n in ("a", "b", "c"))
    old = _cfg(a, b, c)
    new = _cfg({**c, "timeout": 2.0}, {**a}, _pump(502, "d"))
    diff = diff_devices(old, new)
    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == (("d",), ("b",), ("c",), ("a",))
    overridden = _cfg({**a, "overrides": {"flow": {"scale": 2}}})
    assert diff_devices(_cfg(a), overridden).changed == ("a",)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"devices: [unclosed", "neither JSON nor YAML"),
        (b"[1, 2]", "must be a mapping"),
        (json.dumps({"gateway": "g", "site": "s", "devices": []}).encode(), "no config_version"),
        (
            json.dumps({"gateway": "other", "site": "s", "config_version": 2, "devices": [_pump(502, "a")]}).encode(),
            "is for s/other",
        ),
        (
            json.dumps(
                {
                    "gateway": "g",
                    "site": "s",
                    "config_version": 2,
                    "mqtt_url": "mqtt://x:1",
                    "devices": [_pump(502, "a")],
                }
            ).encode(),
            "changes mqtt_url",
        ),
        (
            json.dumps(
                {"gateway": "g", "site": "s", "config_version": 2, "devices": [_pump(502, "a", profile="pump-p100@9")]}
            ).encode(),
            "devices[a]: device 'a': pins profile 'pump-p100' at version 9",
        ),
    ],
)
def test_bad_payloads_are_rejected_with_the_reason(payload: bytes, message: str) -> None:
    """Every way a payload can be unusable gives a message saying what is wrong."""
    with pytest.raises(RemoteConfigRejected, match=None) as err:
        parse_remote(payload, _cfg(_pump(502, "a")), base_dir=None)
    assert message in str(err.value)


def test_a_saved_remote_config_is_used_unless_it_no_longer_loads(tmp_path: Path) -> None:
    """load_effective_config prefers gw.remote.yaml, falls back to gw.yaml when it is broken, keeps .prev."""
    path = tmp_path / "gw.yaml"
    base = {"gateway": "g", "site": "s", "config_version": 1, "devices": [_pump(502, "a")]}
    path.write_text(yaml.safe_dump(base))
    assert load_effective_config(path).config_version == "1"
    persist(remote_path(path), {**base, "config_version": 2})
    persist(remote_path(path), {**base, "config_version": 3})
    assert load_effective_config(path).config_version == "3"
    assert yaml.safe_load((tmp_path / "gw.remote.prev.yaml").read_text())["config_version"] == 2
    persist(remote_path(path), {**base, "config_version": 4, "devices": [_pump(502, "a", profile="gone")]})
    assert load_effective_config(path).config_version == "1"


# --- the MQTT ACL written by provisioning -----------------------------------------------------


@pytest.fixture
def acl_broker(tmp_path: Path, uid: str) -> Iterator[PrivateMosquitto]:
    """A private Mosquitto (the shared one is never touched), anonymous off, with a "server" user that may
    write every config topic and gateway gw-<uid> holding exactly the entries provisioning writes."""
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    site, name = f"site-{uid}", f"gw-{uid}"
    login = GatewayLogin(site, name, f"{site}.{name}", mosquitto_hash("gw-pw"), topic_prefix(site, name))
    pw.write_text(regenerate_passwords(f"server:{mosquitto_hash('server-pw')}\n", [login]).text)
    acl.write_text(regenerate_acl("user server\ntopic readwrite fw/v1/#\n", [login]).text)
    for f in (pw, acl):
        f.chmod(0o600)
    with PrivateMosquitto(password_file=pw, acl_file=acl, workdir=tmp_path / "broker") as broker:
        yield broker


async def test_the_provisioned_acl_lets_the_gateway_read_its_config_topic(
    acl_broker: PrivateMosquitto, sim: PumpModbusServer, uid: str, tmp_path: Path
) -> None:
    """With only the ACL entry provisioning writes (its own prefix), the gateway receives and applies a config."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    site, name = f"site-{uid}", f"gw-{uid}"
    url = acl_broker.url_as(f"{site}.{name}", "gw-pw")
    cfg = parse_config(_doc(uid, tmp_path, "1", _pump(sim.port, "pump-1")))
    server = mqtt.Client(CallbackAPIVersion.VERSION2)
    server.username_pw_set("server", "server-pw")
    server.connect("127.0.0.1", acl_broker.port)  # listening: the fixture waited for it
    server.loop_start()
    try:
        async with Gateway(cfg, mqtt_url=url) as gw:
            await gw.wait_connected()
            new = _doc(uid, tmp_path, "2", _pump(sim.port, "pump-1"), _pump(sim.port, "pump-2", unit=2))
            # Retained, as docs/gateway.md says to publish configs: delivered even if it beats the SUBACK.
            msg = server.publish(topic(site, name, "config"), json.dumps(new).encode(), qos=1, retain=True)
            msg.wait_for_publish(5)
            await wait_until_async(lambda: gw.remote.last is not None, 10, what="the config to be applied or refused")
            assert gw.remote.last is not None and gw.remote.last.outcome == "applied", gw.remote.last
    finally:
        server.loop_stop()
        server.disconnect()
