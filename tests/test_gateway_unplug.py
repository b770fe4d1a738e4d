"""Fault as a test, end to end: a device unplugged and plugged back in.

simulators (a chiller and a compressor on separate Modbus servers) → the real
gateway agent → the real Mosquitto (shared, unique topics) → the real ingest
worker → PostgreSQL. The chiller is unplugged for about ten poll cycles, in two
ways: its server's port closed (the gateway sees connection refused) and then
listening again on the same port; or the device falling silent (the
``comms_loss`` fault: requests time out) and then answering again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path

import orjson
import psycopg
import pytest

from fwcore.contract import Quality, subscription
from gateway import Gateway, parse_config
from ingest import IngestWorker
from simulators.chiller import ChillerModel
from simulators.compressor import CompressorModel
from simulators.modbus_server import EquipmentModbusServer
from tests.support.mqtt import Watcher
from tests.support.registry import register
from tests.support.waits import wait_until, wait_until_async

POLL = 0.2
OUTAGE_S = 2.0  # ten poll cycles


def _rows(db_url: str, device: str) -> list[tuple[str, float, int]]:
    """(tag, epoch seconds, quality) of every stored point of ``device``, in time order."""
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT s.tag, extract(epoch FROM t.time)::float8, t.quality FROM telemetry t"
            " JOIN series s ON s.id = t.series_id JOIN devices d ON d.id = s.device_id"
            " WHERE d.key = %s ORDER BY t.time, s.tag",
            (device,),
        ).fetchall()


def _count(db_url: str, sql: str) -> int:
    with psycopg.connect(db_url) as conn:
        return int(conn.execute(sql).fetchone()[0])  # type: ignore[index]


def _statuses(watcher: Watcher) -> list[dict]:
    out = []
    while not watcher.messages.empty():
        topic, payload, _ = watcher.messages.get_nowait()
        if topic.endswith("/status") and payload:
            out.append(orjson.loads(payload))
    return out


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("how", "reason"),
    [("refused", Quality.BAD_NOT_CONNECTED), ("silent", Quality.BAD_TIMEOUT)],
    ids=["refused", "silent"],
)
async def test_device_unplugged_and_back(
    how: str, reason: Quality, db_url: str, mqtt_url: str, uid: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the chiller is unplugged the compressor on the same gateway keeps delivering every poll; the
    chiller's tags are stored once as bad with the reason (not connected / timeout) and the status topic
    says it is offline; after the replug it is online again and its readings arrive; every published point
    is stored exactly once; and the gateway logged the chiller's error once, not every poll."""
    caplog.set_level(logging.INFO, logger="gateway.agent")
    reg = register(db_url, uid, devices=("ch-1", "comp-1"))
    chiller_sim = EquipmentModbusServer(units={1: ChillerModel(seed=1)}, update_interval=0.1)
    comp_sim = EquipmentModbusServer(units={1: CompressorModel(seed=2)}, update_interval=0.1)
    await chiller_sim.start()
    await comp_sim.start()
    config = parse_config(
        {
            "gateway": reg.gateway, "site": reg.site, "poll_interval": POLL, "state_dir": str(tmp_path),
            "devices": [
                {"name": "ch-1", "host": "127.0.0.1", "port": chiller_sim.port, "profile": "chiller-c200",
                 "timeout": 0.5},
                {"name": "comp-1", "host": "127.0.0.1", "port": comp_sim.port, "profile": "compressor-a300",
                 "timeout": 0.5},
            ],
        }
    )  # fmt: skip
    worker = IngestWorker(
        db_url, mqtt_url, client_id=f"ing-{uid}", site_filter=reg.site, batch_max_wait_ms=20, session_expiry_s=60
    )
    watcher = Watcher(subscription("status", reg.site, reg.gateway))
    gateway = Gateway(config, mqtt_url=mqtt_url)
    worker.start()
    try:
        await gateway.start()
        await gateway.wait_connected()
        await wait_until_async(lambda: all(d.polls >= 5 for d in gateway.stats.devices.values()), 15)

        unplugged_at = time.time()
        if how == "refused":
            await chiller_sim.unplug()
        else:
            chiller_sim.faults[1].comms_loss = True
        await asyncio.sleep(OUTAGE_S)  # time must pass: the outage's length (ten poll cycles) is under test
        assert gateway.stats.device_online == {"ch-1": False, "comp-1": True}
        assert "ch-1" in gateway.stats.device_errors  # the reason, as health reports it
        failures_during_outage = gateway.stats.devices["ch-1"].failures
        offline = [s for s in _statuses(watcher) if s.get("devices", {}).get("ch-1") == "offline"]
        assert offline and offline[-1]["devices"]["comp-1"] == "online"

        replugged_at = time.time()
        if how == "refused":
            await chiller_sim.replug()
        else:
            chiller_sim.faults[1].clear("comms_loss")
        await wait_until_async(lambda: gateway.stats.device_online["ch-1"], 10, what="ch-1 to come back online")
        back_at = time.time()
        ch_polls = gateway.stats.devices["ch-1"].polls
        await wait_until_async(lambda: gateway.stats.devices["ch-1"].polls >= ch_polls + 5, 5)
        online = [s for s in _statuses(watcher) if s.get("devices", {}).get("ch-1") == "online"]
        assert online, "the status topic never said ch-1 is online again"
    finally:
        await gateway.stop()
        try:
            published = gateway.stats.points_published
            stored = lambda: _count(db_url, "SELECT count(*) FROM telemetry")  # noqa: E731
            wait_until(stored, 20, done=lambda n: n >= published, what=f"all {published} published points stored")
        finally:
            worker.stop()
            watcher.close()
            await chiller_sim.stop()
            await comp_sim.stop()

    # Every published point stored exactly once: none lost, none doubled.
    assert _count(db_url, "SELECT count(*) FROM telemetry") == published
    assert _count(db_url, "SELECT count(DISTINCT (series_id, time)) FROM telemetry") == published
    assert _count(db_url, "SELECT count(*) FROM dead_letters") == 0

    # The compressor delivered every poll through the outage. Had it waited on the chiller, a gap would be at
    # least the chiller's 0.5 s timeout; the bound below 0.5 s leaves room for scheduling jitter on a loaded CI box.
    comp = [(ts, q) for tag, ts, q in _rows(db_url, "comp-1") if tag == "oil_temp"]
    assert all(q == Quality.GOOD for _, q in comp)
    times = [ts for ts, _ in comp]
    assert times[0] < unplugged_at and times[-1] > back_at
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 0.45, f"compressor gap of {max(gaps):.2f} s (poll {POLL} s)"

    # The chiller: good, then one bad point per tag with the reason, then good again.
    chiller = _rows(db_url, "ch-1")
    n_tags = len(config.devices[0].tags)
    bad = [(tag, ts, q) for tag, ts, q in chiller if q != Quality.GOOD]
    assert len(bad) == n_tags and {q for _, _, q in bad} == {reason}
    assert all(unplugged_at - POLL <= ts <= replugged_at for _, ts, _ in bad)
    good_after = [ts for tag, ts, q in chiller if q == Quality.GOOD and tag == "superheat" and ts > replugged_at]
    good_before = [ts for tag, ts, q in chiller if q == Quality.GOOD and tag == "superheat" and ts < unplugged_at]
    assert len(good_before) >= 5 and len(good_after) >= 5
    assert not [ts for tag, ts, q in chiller if q == Quality.GOOD and unplugged_at + POLL < ts < replugged_at]

    # Logged once: one ERROR when it went away (despite several failed reconnects), one INFO when it came back.
    assert failures_during_outage >= 2  # several failed attempts (each silent one waits its 0.5 s timeout)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "ch-1" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    recovered = [r for r in caplog.records if "answers again" in r.getMessage() and "ch-1" in r.getMessage()]
    assert len(recovered) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "comp-1" in r.getMessage()]
