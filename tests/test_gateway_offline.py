"""A gateway that dies shows dead: births and deaths ordered by session, a heartbeat as the backstop.

Real gateway processes (``gateway.cli run``) and the real ingest on the shared broker, one fresh
database per test; the "gateway offline" rule is scored by the real no-data job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml

from fwcore.contract import encode_status
from gateway import Gateway, parse_config
from ingest import IngestWorker
from rules.model import RuleSpec
from rules.nodata import check_no_data
from rules.store import save_rule
from simulators import PumpModbusServer, PumpModel
from tests.support.db import scalar
from tests.support.mqtt import publisher
from tests.support.registry import Registered, pts, register
from tests.support.waits import wait_until, wait_until_async

#: The broker's keepalive for the gateways of these tests; the broker declares a silent client dead
#: after 1.5 keepalives and publishes its Will.
KEEPALIVE = 2
#: Mosquitto 2.0 looks for clients past their keepalive once every 6 s (whole seconds): the Will of a
#: silent client comes up to this much later than 1.5 keepalives.
MOSQUITTO_KEEPALIVE_CHECK_S = 7


@pytest.fixture
async def sim() -> AsyncIterator[PumpModbusServer]:
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=7)}, update_interval=0.05)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def reg(db_url: str, uid: str) -> Registered:
    return register(db_url, uid, devices=("pump-1",))


@pytest.fixture
def ingest(db_url: str, mqtt_url: str, reg: Registered, uid: str) -> Iterator[IngestWorker]:
    with IngestWorker(db_url, mqtt_url, client_id=f"ingest-{uid}", site_filter=reg.site) as worker:
        yield worker


def gateway_file(tmp_path: Path, reg: Registered, sim_port: int, mqtt_url: str, **extra: Any) -> Path:
    path = tmp_path / "gw.yaml"
    data = {
        "site": reg.site,
        "gateway": reg.gateway,
        "mqtt_url": mqtt_url,
        "poll_interval": 0.5,
        "state_dir": str(tmp_path / "state"),
        "devices": [{"name": "pump-1", "host": "127.0.0.1", "port": sim_port, "profile": "pump-p100"}],
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def run_gateway(path: Path) -> subprocess.Popen[bytes]:
    """``gateway.cli run`` on ``path``, logging to gateway.log beside it."""
    with (path.parent / "gateway.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", str(path), "--log-level", "INFO"], stdout=log, stderr=log
        )


def gateway_status(db_url: str, reg: Registered) -> str:
    return str(scalar(db_url, "SELECT status FROM gateways WHERE id = %s", (reg.gateway_id,)))


def offline_rule(db_url: str) -> int:
    """A 'gateway offline' rule: alarm each device of a gateway offline for a minute or more."""
    spec = {
        "name": "gateway offline",
        "tag": "*",
        "problem_code": "NO_DATA",
        "condition": {"kind": "no_data", "target": "gateway", "threshold": 1, "clear": 0.5},
    }
    with psycopg.connect(db_url, autocommit=True) as conn:
        return save_rule(conn, RuleSpec.model_validate(spec), author="test")[0].id


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_killed_gateway_turns_offline_alarms_its_devices_and_comes_back_online_on_restart(
    db_url: str, mqtt_url: str, reg: Registered, ingest: IngestWorker, sim: PumpModbusServer, tmp_path: Path
) -> None:
    """kill -9 of a gateway process turns it offline within 1.5 keepalives, the offline rule alarms its
    device, and the restarted process turns it online again (clearing the alarm)."""
    rule = offline_rule(db_url)
    path = gateway_file(tmp_path, reg, sim.port, mqtt_url, mqtt_keepalive=KEEPALIVE)
    proc = run_gateway(path)
    try:
        await wait_until_async(lambda: gateway_status(db_url, reg), 20, done=lambda s: s == "online")
        await wait_until_async(lambda: scalar(db_url, "SELECT count(*) FROM telemetry"), 10)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    killed = time.monotonic()
    # The kernel closes a killed process's socket: the broker sees it at once, no keepalive needed.
    await wait_until_async(lambda: gateway_status(db_url, reg), 1.5 * 30, done=lambda s: s == "offline")
    assert time.monotonic() - killed <= 1.5 * KEEPALIVE

    opened = check_no_data(db_url, now_ms=now_ms() + 2 * 60_000)
    assert [(e.rule_id, e.device_id, e.type) for e in opened] == [(rule, reg.devices["pump-1"], "alarm_opened")]

    proc = run_gateway(path)
    try:
        await wait_until_async(lambda: gateway_status(db_url, reg), 20, done=lambda s: s == "online")
        cleared = check_no_data(db_url, now_ms=now_ms() + 3 * 60_000)
        assert [(e.device_id, e.type) for e in cleared] == [(reg.devices["pump-1"], "alarm_cleared")]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    await wait_until_async(lambda: gateway_status(db_url, reg), 10, done=lambda s: s == "offline")


async def test_frozen_gateway_turns_offline_within_one_and_a_half_keepalives_and_online_when_it_thaws(
    db_url: str, mqtt_url: str, reg: Registered, ingest: IngestWorker, sim: PumpModbusServer, tmp_path: Path
) -> None:
    """A gateway that stops answering without closing its connection (frozen, cut off) is declared dead by
    the broker after 1.5 keepalives (plus the broker's check period), and is online again once it runs
    and reconnects."""
    proc = run_gateway(gateway_file(tmp_path, reg, sim.port, mqtt_url, mqtt_keepalive=KEEPALIVE))
    try:
        await wait_until_async(lambda: gateway_status(db_url, reg), 20, done=lambda s: s == "online")
        os.kill(proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        await wait_until_async(lambda: gateway_status(db_url, reg), 20, done=lambda s: s == "offline")
        assert time.monotonic() - frozen <= 1.5 * KEEPALIVE + MOSQUITTO_KEEPALIVE_CHECK_S + 1.5
        os.kill(proc.pid, signal.SIGCONT)
        await wait_until_async(lambda: gateway_status(db_url, reg), 20, done=lambda s: s == "online")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


async def test_a_late_will_of_an_earlier_session_does_not_turn_a_live_gateway_offline(
    db_url: str, mqtt_url: str, reg: Registered, ingest: IngestWorker, sim: PumpModbusServer, tmp_path: Path
) -> None:
    """A death from an earlier session (a Will the broker delivers after the gateway reconnected) is ignored,
    even with a newer timestamp; a death from the current session is not."""
    gw = Gateway(parse_config(yaml.safe_load(gateway_file(tmp_path, reg, sim.port, mqtt_url).read_text())))
    status_topic = reg.topic("status")
    async with gw:
        await wait_until_async(lambda: gateway_status(db_url, reg), 20, done=lambda s: s == "online")
        session = scalar(db_url, "SELECT status_session FROM gateways WHERE id = %s", (reg.gateway_id,))
        assert isinstance(session, int) and session > 0
        with publisher(mqtt_url, f"late-will-{reg.gateway}") as publish:
            stale = encode_status(
                "offline", gateway=reg.gateway, ts=now_ms() + 1000, reason="connection lost", session=session - 1
            )
            publish(status_topic, stale, retain=True)
            # A sentinel after it on the same topic (dead-lettered): once it is stored, the Will was handled.
            publish(status_topic, b"sentinel")
            await wait_until_async(
                lambda: scalar(db_url, "SELECT count(*) FROM dead_letters"), 10, what="ingest past the late Will"
            )
            assert gateway_status(db_url, reg) == "online"
            current = encode_status("offline", gateway=reg.gateway, ts=0, reason="connection lost", session=session)
            publish(status_topic, current, retain=True)
            await wait_until_async(
                lambda: gateway_status(db_url, reg) == "offline", 10, what="the current session's death"
            )


def test_a_gateway_silent_without_a_will_turns_offline_then_online_when_heard_again(
    db_url: str, mqtt_url: str, reg: Registered, uid: str
) -> None:
    """A gateway whose death never reached ingest (no Will, e.g. lost with a crashed broker) turns offline
    once its health messages stop for the silence timeout, and online again when they resume."""
    session = now_ms()
    health = orjson.dumps({"v": 1, "gateway": reg.gateway, "site": reg.site, "session": session, "interval_s": 0.2})
    worker = IngestWorker(db_url, mqtt_url, client_id=f"ingest-{uid}", site_filter=reg.site, silence_timeout_s=1.0)
    with worker, publisher(mqtt_url, f"gw-{uid}") as publish:
        birth = encode_status("online", gateway=reg.gateway, ts=now_ms(), reason="connected", session=session)
        publish(reg.topic("status"), birth)
        for _ in range(5):
            publish(reg.topic("health"), health)
        silent = time.monotonic()
        wait_until(lambda: gateway_status(db_url, reg) == "online", 10, what="the birth stored")
        wait_until(lambda: gateway_status(db_url, reg) == "offline", 10, what="the silence verdict")
        assert time.monotonic() - silent >= 0.8  # not before the timeout
        reason = scalar(db_url, "SELECT status_reason FROM gateways WHERE id = %s", (reg.gateway_id,))
        assert reason == "no heartbeat"
        publish(reg.topic("health"), health)
        wait_until(lambda: gateway_status(db_url, reg) == "online", 10, what="the gateway heard again")


def test_heartbeats_sent_at_qos_1_do_not_stall_telemetry(db_url: str, mqtt_url: str, reg: Registered, uid: str) -> None:
    """Health messages never enter the write queue, but one sent at QoS 1 is still acknowledged: 50 of them
    (more than an MQTT 3.1.1 client's in-flight window) are followed by telemetry that is stored."""
    health = orjson.dumps({"v": 1, "gateway": reg.gateway, "site": reg.site, "interval_s": 10})
    worker = IngestWorker(db_url, mqtt_url, client_id=f"ingest-{uid}", protocol="3.1.1", site_filter=reg.site)
    with worker, publisher(mqtt_url, f"gw-{uid}") as publish:
        for _ in range(50):
            publish(reg.topic("health"), health)
        publish(reg.topic(), reg.batch(1, pts("pump-1", "temp", 3)))
        wait_until(lambda: scalar(db_url, "SELECT count(*) FROM telemetry") == 3, 10, what="the telemetry stored")
