"""Sparkplug B edge-node mode, checked with an independent decoder: Eclipse Tahu's JavaScript codec.

Everything the gateway publishes on ``spBv1.0/...`` is decoded by Tahu's reference
implementation (npm ``sparkplug-payload``, installed into ``tests/sparkplug_js/``),
and the rebirth command the test sends is *encoded* by it, so the gateway's
hand-written protobuf codec is checked in both directions against code it shares
nothing with. The broker is the real Mosquitto (a private one where the test stops
it), the devices are real Modbus simulators, the gateway the real agent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fwcore.contract import Point, Quality
from fwcore.settings import mqtt_parts
from gateway import ConfigError, Gateway, parse_config
from gateway.sparkplug_proto import (
    DataType,
    Metric,
    Payload,
    decode_payload,
    encode_metric,
    encode_payload,
    fast_metric,
    uint_field,
)
from gateway.sparkplug_session import SparkplugSession, metric_defs
from simulators.register_bank import RegisterBankServer
from tests.support.brokers import PrivateMosquitto
from tests.support.ports import free_port
from tests.support.waits import wait_until_async

JS_DIR = Path(__file__).parent / "sparkplug_js"
POLL = 0.2


# --- the independent reference: Tahu's JS codec ---------------------------------------------
@pytest.fixture(scope="module")
def tahu() -> Callable[..., dict[str, Any]]:
    """``tahu(decode=[bytes...], encode=[payload dicts...])`` via ``node tests/sparkplug_js/tahu.js``.

    Installs the pinned npm package on first use (``npm ci``, from package-lock.json).
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: cannot run Eclipse Tahu's reference Sparkplug decoder (apt install npm)")
    if not (JS_DIR / "node_modules" / "sparkplug-payload").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=JS_DIR, check=True, capture_output=True
        )

    def call(decode: list[bytes] = (), encode: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        req = {"decode": [base64.b64encode(b).decode() for b in decode], "encode": list(encode)}
        out = subprocess.run(
            ["node", "tahu.js"], cwd=JS_DIR, input=json.dumps(req).encode(), capture_output=True, check=True
        )
        res = json.loads(out.stdout)
        res["encoded"] = [base64.b64decode(e) for e in res["encoded"]]
        return res

    return call


# --- wire codec, both directions ----------------------------------------------------------
def test_payload_encoding_is_read_back_identically_by_tahu(tahu: Callable[..., dict[str, Any]]) -> None:
    """Every datatype the gateway emits, nulls, historical flags and property sets decode as written."""
    metrics = [
        Metric("i16", 1, 1000, DataType.Int16, -1234),
        Metric("u16", 2, 1001, DataType.UInt16, 54321),
        Metric("i32", 3, 1002, DataType.Int32, -100000),
        Metric("i64", 4, 1003, DataType.Int64, -(2**40)),
        Metric("u64", 5, 1004, DataType.UInt64, 2**63 + 5),
        Metric("f", 6, 1005, DataType.Float, 12.5),
        Metric("d", 7, 1006, DataType.Double, -2.75e-9),
        Metric("b", 8, 1007, DataType.Boolean, True),
        Metric("s", 9, 1008, DataType.String, "héllo"),
        Metric(None, 10, 1009, DataType.Double, None, is_null=True, is_historical=True,
               properties={"Quality": (DataType.Int32, 0), "fieldwatch_quality": (DataType.String, "BAD_TIMEOUT")}),
    ]  # fmt: skip
    [decoded] = tahu(decode=[encode_payload(Payload(1_700_000_000_123, metrics, 255))])["decoded"]
    assert int(decoded["timestamp"]) == 1_700_000_000_123 and int(decoded["seq"]) == 255
    got = decoded["metrics"]
    assert [m.get("name") for m in got] == [m.name for m in metrics]
    assert [int(m["alias"]) for m in got] == list(range(1, 11))
    assert [m["type"] for m in got] == [DataType(m.datatype).name for m in metrics]
    assert [int(m["timestamp"]) for m in got] == list(range(1000, 1010))
    values = [m["value"] for m in got]
    assert values[:3] == [-1234, 54321, -100000]
    assert int(values[3]) == -(2**40) and int(values[4]) == 2**63 + 5
    assert values[5:9] == [12.5, -2.75e-9, True, "héllo"]
    assert values[9] is None and got[9]["isHistorical"] is True
    assert got[9]["properties"] == {
        "Quality": {"type": "Int32", "value": 0},
        "fieldwatch_quality": {"type": "String", "value": "BAD_TIMEOUT"},
    }


def test_commands_encoded_by_tahu_are_read_by_the_gateway(tahu: Callable[..., dict[str, Any]]) -> None:
    """An NCMD rebirth request as a Tahu host encodes it is recognised; other metrics keep their values."""
    cmd = {"timestamp": 5, "metrics": [{"name": "Node Control/Rebirth", "type": "Boolean", "value": True},
                                       {"name": "x", "type": "Int32", "value": -7, "alias": 3},
                                       {"name": "y", "type": "Double", "value": 0.5}]}  # fmt: skip
    [raw] = tahu(encode=[cmd])["encoded"]
    payload = decode_payload(raw)
    assert payload.timestamp == 5
    assert [(m.name, m.alias, m.datatype, m.value) for m in payload.metrics] == [
        ("Node Control/Rebirth", None, DataType.Boolean, True),
        ("x", 3, DataType.Int32, -7),
        ("y", None, DataType.Double, 0.5),
    ]
    session = SparkplugSession("g", "n", {})
    assert session.is_rebirth_request(payload)
    assert not session.is_rebirth_request(
        decode_payload(encode_payload(Payload(1, [Metric("x", datatype=11, value=True)])))
    )


@pytest.mark.parametrize(
    ("datatype", "value"),
    [(DataType.Int16, -2), (DataType.UInt16, 65535), (DataType.Int32, -(2**31)), (DataType.Int64, 2**40),
     (DataType.UInt64, 2**64 - 1), (DataType.Float, 0.1), (DataType.Double, -1e300), (DataType.Boolean, False)],
)  # fmt: skip
def test_fast_ddata_metric_is_byte_identical_to_the_general_encoder(datatype: DataType, value: Any) -> None:
    """The precomputed hot path for good DDATA points writes exactly what encode_metric writes."""
    general = encode_metric(Metric(alias=300, timestamp=1_795_000_000_000, datatype=datatype, value=value))
    fast = fast_metric(uint_field(2, 300), 1_795_000_000_000, uint_field(4, datatype), datatype, value)
    assert fast == general


# --- the pure session ----------------------------------------------------------------------
def _bank_config(port: int, *, group: str = "g-test", state_dir: str = "/tmp", **extra: Any) -> dict[str, Any]:
    """A gateway over one register bank whose every tag has a known value (see BANK_*)."""
    return {
        "site": "s-sparkplug",
        "gateway": "gw-sp",
        "poll_interval": POLL,
        "state_dir": state_dir,
        "sparkplug": {"group_id": group, "edge_node_id": "edge-1"},
        "devices": [{"name": "bank-1", "host": "127.0.0.1", "port": port, "timeout": 0.5, "tags": BANK_TAGS}],
        **extra,
    }


BANK_TAGS = [
    {"name": "i16", "address": 0, "data_type": "int16"},
    {"name": "u16", "address": 1, "data_type": "uint16"},
    {"name": "i32", "address": 2, "data_type": "int32"},
    {"name": "u32", "address": 4, "data_type": "uint32"},
    {"name": "f32", "address": 6, "data_type": "float32", "unit": "bar"},
    {"name": "f64", "address": 8, "data_type": "float64"},
    {"name": "scaled", "address": 12, "data_type": "uint16", "scale": 0.1},
    {"name": "bit2", "address": 13, "data_type": "bit", "bit": 2},
    {"name": "coil3", "register": "coil", "address": 3, "data_type": "bool"},
    {"name": "missing", "address": 20, "data_type": "uint16"},  # in a hole: BAD_EXCEPTION every poll
]
#: tag -> (Sparkplug type name as Tahu prints it, value)
BANK_EXPECTED: dict[str, tuple[str, Any]] = {
    "i16": ("Int16", -1234),
    "u16": ("UInt16", 54321),
    "i32": ("Int32", -100000),
    "u32": ("Int64", 3_000_000_000),
    "f32": ("Float", 12.5),
    "f64": ("Double", -2.75),
    "scaled": ("Double", 25.0),
    "bit2": ("Boolean", True),
    "coil3": ("Boolean", True),
    "missing": ("UInt16", None),
}


def _value(name: str, value: Any) -> Any:
    """Tahu prints 64-bit integers as text (see tahu.js); compare them as numbers."""
    return int(value) if BANK_EXPECTED[name][0] == "Int64" and value is not None else value


def _bank_server(port: int) -> RegisterBankServer:
    f64 = struct.unpack(">4H", struct.pack(">d", -2.75))
    holding = {0: -1234 & 0xFFFF, 1: 54321, 2: 0xFFFE, 3: 0x7960, 4: 0xB2D0, 5: 0x5E00, 6: 0x4148, 7: 0,
               8: f64[0], 9: f64[1], 10: f64[2], 11: f64[3], 12: 250, 13: 0b100, 20: 0}  # fmt: skip
    return RegisterBankServer("127.0.0.1", port, holding=holding, coils={3: True}, holes=[20])


def test_session_sequence_wraps_at_256_and_aliases_are_unique() -> None:
    """seq runs 0..255 then 0 again across DBIRTH/DDATA/DDEATH; NBIRTH resets it; aliases are unique."""
    config = parse_config(_bank_config(1))
    defs = metric_defs(config.devices)
    aliases = [d.alias for dev in defs.values() for d in dev.values()]
    assert len(set(aliases)) == len(aliases) == len(BANK_TAGS)
    s = SparkplugSession("g", "n", defs)
    seqs = [decode_payload(m.payload).seq for m in s.birth(7, 1)]
    s.set_online("bank-1", True, 1)
    for i in range(300):
        msgs, carried = s.data([Point("bank-1", "u16", i, 1.0)], i)
        assert carried == 1
        seqs += [decode_payload(m.payload).seq for m in msgs]
    seqs += [decode_payload(m.payload).seq for m in s.set_online("bank-1", False, 2)]
    assert seqs == [i % 256 for i in range(302)]
    assert [decode_payload(m.payload).seq for m in s.birth(7, 3)] == [0]  # bank-1 is offline: no DBIRTH
    msgs, carried = s.data([Point("bank-1", "u16", 5, 0.0, Quality.BAD_TIMEOUT)], 5)
    assert (msgs, carried, s.points_superseded) == ([], 0, 1)


def test_quality_goes_as_is_null_and_quality_property_and_recovery_is_announced(
    tahu: Callable[..., dict[str, Any]],
) -> None:
    """Bad: null value, Quality 0 and the fieldwatch reason; next good: Quality 192 once; uncertain: value + 64."""
    s = SparkplugSession("g", "n", metric_defs(parse_config(_bank_config(1)).devices))
    s.birth(1, 0)
    s.set_online("bank-1", True, 0)
    s.data([Point("bank-1", "f32", 1, 1.0)], 1)  # DBIRTH
    readings = [(Quality.BAD_TIMEOUT, 2.0), (Quality.GOOD, 3.0), (Quality.GOOD, 4.0), (Quality.UNCERTAIN, 5.0)]
    payloads = [
        s.data([Point("bank-1", "f32", 10 + i, v, q)], 10 + i)[0][0].payload for i, (q, v) in enumerate(readings)
    ]
    got = [d["metrics"][0] for d in tahu(decode=payloads)["decoded"]]
    assert [m["value"] for m in got] == [None, 3.0, 4.0, 5.0]
    assert [m.get("properties") for m in got] == [
        {"Quality": {"type": "Int32", "value": 0}, "fieldwatch_quality": {"type": "String", "value": "BAD_TIMEOUT"}},
        {"Quality": {"type": "Int32", "value": 192}},
        None,
        {"Quality": {"type": "Int32", "value": 64}, "fieldwatch_quality": {"type": "String", "value": "UNCERTAIN"}},
    ]
    assert all(m["type"] == "Float" and int(m["alias"]) == 5 for m in got)


def test_a_device_that_answered_before_the_connection_is_born_with_its_values_not_nulls(
    tahu: Callable[..., dict[str, Any]],
) -> None:
    """Polled while the node was still connecting (its points wait on disk): NBIRTH alone, then the DBIRTH goes
    out with the first live data and carries those values — never a DBIRTH of null metrics."""
    s = SparkplugSession("g", "n", metric_defs(parse_config(_bank_config(1)).devices))
    s.set_online("bank-1", True, 0)
    births = s.birth(1, 1)
    assert [m.topic.split("/")[2] for m in births] == ["NBIRTH"]
    msgs, carried = s.data([Point("bank-1", "i16", 2, -1234.0), Point("bank-1", "f32", 2, 12.5)], 2)
    assert ([m.topic.split("/")[2] for m in msgs], carried) == (["DBIRTH"], 2)
    metrics = {m["name"]: m for m in tahu(decode=[msgs[0].payload])["decoded"][0]["metrics"]}
    assert (metrics["i16"]["value"], metrics["f32"]["value"]) == (-1234, 12.5)
    assert metrics["u16"]["value"] is None  # not in that data: not read yet
    # With values known, a later birth (reconnect or rebirth) carries the device at once.
    assert [m.topic.split("/")[2] for m in s.birth(2, 3)] == ["NBIRTH", "DBIRTH"]


def test_sparkplug_ids_are_validated_with_the_entry_named() -> None:
    """A group id with an MQTT wildcard or slash is refused, naming the field."""
    with pytest.raises(ConfigError, match=r"sparkplug\.group_id: .*'a/b'"):
        parse_config(_bank_config(1, group="a/b"))
    assert parse_config(_bank_config(1)).sparkplug is not None
    assert parse_config({**_bank_config(1), "sparkplug": None}).sparkplug is None  # default: fieldwatch telemetry


# --- against the real broker and simulator ---------------------------------------------------
class Spy:
    """Subscribes to ``spBv1.0/{group}/#`` (re-subscribing after reconnects) and keeps (topic, payload) in order."""

    def __init__(self, url: str, group: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.seen: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(f"spBv1.0/{group}/#", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.reconnect_delay_set(0.1, 0.3)
        parts = mqtt_parts(url)
        self.client.connect_async(parts["host"], parts["port"])
        self.client.loop_start()

    async def wait_subscribed(self) -> None:
        """Return once the broker has confirmed the subscription: from now on nothing is missed."""
        await wait_until_async(self.subscribed.is_set, 5, what="the spy's SUBACK")

    def drain(self) -> list[tuple[str, bytes]]:
        """Everything received so far, in order."""
        while not self.messages.empty():
            self.seen.append(self.messages.get_nowait())
        return self.seen

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[bytes]:
        """Wait until ``count`` messages of ``kind`` (NBIRTH, DDATA, ...) have arrived since the start."""

        def arrived() -> list[bytes]:
            return [p for t, p in self.drain() if t.split("/")[2] == kind]

        return await wait_until_async(
            arrived,
            timeout,
            done=lambda got: len(got) >= count,
            what=f"{count} {kind}",
            observe=lambda: [t.split("/")[2] for t, _ in self.seen],
        )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def spy_factory() -> Iterator[Callable[[str, str], Spy]]:
    spies: list[Spy] = []

    def make(url: str, group: str) -> Spy:
        spies.append(Spy(url, group))
        return spies[-1]

    yield make
    for s in spies:
        s.close()


def _decoded(tahu: Callable[..., dict[str, Any]], seen: list[tuple[str, bytes]]) -> list[tuple[str, dict[str, Any]]]:
    seen = [(t, p) for t, p in seen if t.split("/")[2] not in ("NCMD", "DCMD")]  # the test's own commands
    decoded = tahu(decode=[p for _, p in seen])["decoded"]
    return [(t.split("/")[2], d) for (t, _), d in zip(seen, decoded, strict=True)]


def _check_seq_continuity(msgs: list[tuple[str, dict[str, Any]]]) -> None:
    """Within a birth, every message's seq is the previous one + 1 (mod 256); NBIRTH starts at 0."""
    prev: int | None = None
    for kind, d in msgs:
        if kind == "NDEATH":
            assert "seq" not in d
            prev = None
            continue
        seq = int(d["seq"])
        if kind == "NBIRTH":
            assert seq == 0
        elif prev is not None:
            assert seq == (prev + 1) % 256, f"{kind} seq {seq} after {prev}"
        prev = seq


def _bdseq(d: dict[str, Any]) -> int:
    [m] = [m for m in d["metrics"] if m.get("name") == "bdSeq"]
    assert m["type"] == "Int64"
    return int(m["value"])


async def test_edge_node_births_data_rebirth_ddeath_and_ndeath_decode_with_tahu(
    tahu: Callable[..., dict[str, Any]], mqtt_url: str, uid: str, tmp_path: Path, spy_factory: Any
) -> None:
    """NBIRTH/DBIRTH/DDATA carry every tag with alias, datatype and the simulator's value; a Tahu-encoded
    NCMD rebirth re-sends the births; a dead device gets DDEATH then DBIRTH; a clean stop sends NDEATH."""
    group = f"g-{uid}"
    port = free_port()
    bank = _bank_server(port)
    await bank.start()
    spy = spy_factory(mqtt_url, group)
    await spy.wait_subscribed()  # before the node is born
    gw = Gateway(parse_config(_bank_config(port, group=group, state_dir=str(tmp_path))), mqtt_url)
    try:
        await gw.start()
        await spy.wait_for("DDATA", 3)
        rebirth = {"name": "Node Control/Rebirth", "type": "Boolean", "value": True}
        [ncmd] = tahu(encode=[{"timestamp": int(time.time() * 1000), "metrics": [rebirth]}])["encoded"]
        spy.client.publish(f"spBv1.0/{group}/NCMD/edge-1", ncmd, qos=0)
        await spy.wait_for("NBIRTH", 2)
        await spy.wait_for("DBIRTH", 2)
        await bank.stop()
        await spy.wait_for("DDEATH", 1, timeout=10)
        await bank.start()
        await spy.wait_for("DBIRTH", 3, timeout=15)
        await spy.wait_for("DDATA", len([t for t, _ in spy.seen if "/DDATA/" in t]) + 1)
    finally:
        await gw.stop()
        await bank.stop()
    await spy.wait_for("NDEATH", 1)
    msgs = _decoded(tahu, spy.seen)
    kinds = [k for k, _ in msgs]
    assert kinds[0] == "NBIRTH" and kinds[1] == "DBIRTH" and kinds[-1] == "NDEATH"
    assert all(t.endswith("/edge-1/bank-1") for t, _ in spy.seen if t.split("/")[2].startswith("D"))
    _check_seq_continuity(msgs)

    births = [d for k, d in msgs if k == "NBIRTH"]
    assert len(births) == 2 and _bdseq(births[0]) == _bdseq(births[1])  # a rebirth keeps the connection's bdSeq
    assert {(m["name"], m["type"], m["value"]) for m in births[0]["metrics"]} >= {
        ("Node Control/Rebirth", "Boolean", False)
    }
    [ndeath] = [d for k, d in msgs if k == "NDEATH"]
    assert _bdseq(ndeath) == _bdseq(births[0])
    assert gw._sparkplug is not None and gw._sparkplug.stats.rebirths == 1

    dbirths = [d for k, d in msgs if k == "DBIRTH"]
    assert len(dbirths) == 3
    aliases: dict[int, str] = {}
    for dbirth in dbirths:
        by_name = {m["name"]: m for m in dbirth["metrics"]}
        assert set(by_name) == set(BANK_EXPECTED)
        for name, (type_name, value) in BANK_EXPECTED.items():
            m = by_name[name]
            assert (m["type"], _value(name, m["value"])) == (type_name, value), name
            aliases.setdefault(int(m["alias"]), name)
            assert aliases[int(m["alias"])] == name  # the same alias in every birth
        assert by_name["f32"]["properties"]["engUnit"] == {"type": "String", "value": "bar"}
        assert by_name["missing"]["properties"]["Quality"] == {"type": "Int32", "value": 0}
        assert by_name["missing"]["properties"]["fieldwatch_quality"]["value"] == "BAD_EXCEPTION"
    assert len(aliases) == len(BANK_EXPECTED)

    ddata = [d for k, d in msgs if k == "DDATA"]
    assert len(ddata) >= 4
    now = time.time() * 1000
    for d in ddata:
        for m in d["metrics"]:
            assert "name" not in m  # by alias only, as the births defined
            name = aliases[int(m["alias"])]
            assert (m["type"], _value(name, m["value"])) == BANK_EXPECTED[name]
            assert abs(int(m["timestamp"]) - now) < 60_000
            assert not m.get("isHistorical")
    assert gw.stats.points_published >= len(BANK_EXPECTED) * 4


def _write_config(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data))


def _run(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", str(path), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_unclean_death_fires_ndeath_will_bdseq_persists_and_outage_is_replayed_as_historical(
    tahu: Callable[..., dict[str, Any]], uid: str, tmp_path: Path, spy_factory: Any
) -> None:
    """SIGKILL: the broker sends the NDEATH Will with the NBIRTH's bdSeq; a restart is born with bdSeq+1.
    Broker down for a while: points are kept on disk and replayed after the rebirth as is_historical DDATA.
    (MQTT 3.1.1 here; the other broker test runs MQTT 5.)"""
    broker = PrivateMosquitto(workdir=tmp_path / "broker")
    broker.start()
    group = f"g-{uid}"
    port = free_port()
    bank = _bank_server(port)
    await bank.start()
    path = tmp_path / "gw.yaml"
    _write_config(
        path,
        _bank_config(port, group=group, state_dir=str(tmp_path / "state"), mqtt_url=broker.url, mqtt_protocol="3.1.1"),
    )
    spy = spy_factory(broker.url, group)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await spy.wait_subscribed()
        procs.append(_run(path))
        await spy.wait_for("DDATA", 1, timeout=20)
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait(5)
        await spy.wait_for("NDEATH", 1, timeout=10)  # the broker notices the dead socket (keepalive not needed)
        procs.append(_run(path))
        await spy.wait_for("NBIRTH", 2, timeout=20)
        await spy.wait_for("DDATA", 3, timeout=10)
        broker.stop()
        outage_start = time.time() * 1000
        await asyncio.sleep(2.5)  # time must pass: the outage's length (about 12 polls) is under test
        outage_end = time.time() * 1000
        broker.start()
        await spy.wait_for("NBIRTH", 3, timeout=20)

        def replayed_outage() -> list[int]:
            """Distinct timestamps of historical DDATA metrics inside the outage (decoded by Tahu)."""
            msgs = _decoded(tahu, [(t, p) for t, p in spy.drain() if "/DDATA/" in t])
            stamps = {int(m["timestamp"]) for _, d in msgs for m in d["metrics"] if m.get("isHistorical")}
            return sorted(t for t in stamps if outage_start <= t <= outage_end)

        await wait_until_async(
            replayed_outage,
            20,
            done=lambda ts: len(ts) >= 5,
            what="the outage replayed as historical DDATA",
            interval=0.5,
        )
        await spy.wait_for("DDATA", len([t for t, _ in spy.seen if "/DDATA/" in t]) + 1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        await bank.stop()
        broker.stop()
    msgs = _decoded(tahu, spy.seen)
    kinds = [k for k, _ in msgs]
    births = [d for k, d in msgs if k == "NBIRTH"]
    first_death = next(d for k, d in msgs if k == "NDEATH")
    assert kinds.index("NDEATH") > kinds.index("NBIRTH")
    assert _bdseq(first_death) == _bdseq(births[0])
    assert _bdseq(births[1]) == (_bdseq(births[0]) + 1) % 256  # persisted across the restart
    assert _bdseq(births[2]) == (_bdseq(births[1]) + 1) % 256  # a new connection, a new bdSeq
    _check_seq_continuity(msgs)

    after = msgs[[i for i, (k, _) in enumerate(msgs) if k == "NBIRTH"][2] :]
    historical = [m for k, d in after if k == "DDATA" for m in d["metrics"] if m.get("isHistorical")]
    ts = sorted(int(m["timestamp"]) for m in historical)
    assert ts and ts[0] < outage_end and ts[-1] > outage_start
    # the outage (about 2.5 s at 0.2 s polls) is covered, not just a point of it
    assert len({t for t in ts if outage_start <= t <= outage_end}) >= 5
    live_first = next(i for i, (k, d) in enumerate(after) if k == "DDATA")
    assert after[0][0] == "NBIRTH" and after[1][0] == "DBIRTH" and live_first >= 2
    for m in historical:  # aliases are 1.. in config order
        name = BANK_TAGS[int(m["alias"]) - 1]["name"]
        assert (m["type"], _value(name, m["value"])) == BANK_EXPECTED[name]
