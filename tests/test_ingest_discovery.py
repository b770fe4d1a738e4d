"""Devices nobody registered: their data is held (not dropped), they are listed as discovered with their
tags, and accepting one stores the held data exactly once — real Mosquitto, PostgreSQL, worker and API."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from prometheus_client import REGISTRY

from fwcore.contract import Point, encode_status
from ingest import IngestWorker
from ingest.discovery import expire_held, get_discovered, list_discovered
from ingest.hold import HoldLimits, HoldWrite
from ingest.writer import TelemetryWriter
from tests.support import gateways
from tests.support.api import BASE, api_client, auth, token
from tests.support.db import scalar
from tests.support.mqtt import forget_session, publisher
from tests.support.registry import NOW_MS, Registered, pts, register
from tests.support.waits import wait_until

SESSION_S = 60
names, sim = gateways.names, gateways.sim


@contextmanager
def running(db_url: str, mqtt_url: str, client_id: str, site: str, **kw) -> Iterator[IngestWorker]:
    """A started worker that only hears ``site`` (the broker is shared with other tests)."""
    kw.setdefault("batch_max_wait_ms", 20)
    worker = IngestWorker(db_url, mqtt_url, client_id=client_id, session_expiry_s=SESSION_S, site_filter=site, **kw)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        forget_session(mqtt_url, client_id)


def stored(db_url: str, gateway_id: int, key: str) -> list[tuple[str, int, float]]:
    """(tag, ts ms, value) of every stored point of device ``key`` on the gateway, in time order."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """SELECT s.tag, (extract(epoch FROM t.time) * 1000)::int8, t.value FROM telemetry t
               JOIN series s ON s.id = t.series_id JOIN devices d ON d.id = s.device_id
               WHERE d.gateway_id = %s AND d.key = %s ORDER BY t.time, s.tag""",
            (gateway_id, key),
        ).fetchall()
    return [(t, int(ms), v) for t, ms, v in rows]


def letters(db_url: str, gateway: str) -> list[tuple[str, int]]:
    """(reason, points) of the gateway's dead letters, oldest first."""
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT reason, points FROM dead_letters WHERE gateway = %s ORDER BY id", (gateway,)
        ).fetchall()


def discovered(db_url: str, reg: Registered, key: str):
    with psycopg.connect(db_url) as conn:
        page = list_discovered(conn, gateway=reg.gateway)
    found = [d for d in page.items if d.key == key]
    return found[0] if found else None


def status(reg: Registered, ts: int = NOW_MS, **devices: dict[str, str]) -> bytes:
    """A full status announcing ``devices`` (name -> {tag: unit}), all online, with the pump-p100 profile."""
    return encode_status(
        "online",
        gateway=reg.gateway,
        ts=ts,
        reason="connected",
        devices={d: "online" for d in devices},
        profiles={d: "pump-p100@1" for d in devices},
        tags={d: dict(t) for d, t in devices.items()},
    )


def as_rows(points: list[Point]) -> list[tuple[str, int, float]]:
    return sorted(((p.tag, p.ts, p.value) for p in points), key=lambda r: (r[1], r[0]))


def test_an_unregistered_device_is_held_discovered_and_accepted_exactly_once(
    db_url: str, mqtt_url: str, uid: str
) -> None:
    """Points of a device nobody registered are held, not dead-lettered; it is discovered with the tags and units
    its gateway announced; accepting it (twice) registers it at the gateway's site and stores each point once."""
    reg = register(db_url, uid, devices=("pump-1",))
    new = pts("pump-9", "temp", 5) + pts("pump-9", "flow", 3, start_ms=NOW_MS - 30_000)
    with running(db_url, mqtt_url, f"ing-{uid}", reg.site) as w, publisher(mqtt_url, f"pub-{uid}") as publish:
        publish(reg.topic("status"), status(reg, **{"pump-1": {"temp": "degC"}, "pump-9": {"temp": "degC"}}))
        publish(reg.topic(), reg.batch(1, pts("pump-1", "temp", 2) + new[:4]))
        publish(reg.topic(), reg.batch(2, new[4:]))
        publish(reg.topic(), reg.batch(2, new[4:]))  # a redelivery holds nothing twice
        wait_until(lambda: w.stats.messages >= 4, what="status and three batches committed")

        assert letters(db_url, reg.gateway) == []
        assert stored(db_url, reg.gateway_id, "pump-9") == []
        found = discovered(db_url, reg, "pump-9")
        assert found is not None and found.state == "pending" and found.held_points == 8
        assert found.profile == "pump-p100@1"
        assert found.tags == {"temp": "degC", "flow": ""}  # announced unit; 'flow' only seen in data

        with api_client(db_url) as api:
            headers = auth(token(db_url, "field_engineer"))
            first = api.post(f"{BASE}/discovered/{found.id}/accept", json={"equipment_model": "P100"}, headers=headers)
            assert first.status_code == 200, first.text
            again = api.post(f"{BASE}/discovered/{found.id}/accept", headers=headers)
            assert again.status_code == 200, again.text
        assert first.json()["stored"] == 8 and again.json()["stored"] == 0
        device_id = first.json()["device_id"]
        assert again.json()["device_id"] == device_id
        assert stored(db_url, reg.gateway_id, "pump-9") == as_rows(new)

        # Accepted: the next points go straight in (the worker's cache learns the device within a second).
        later = pts("pump-9", "temp", 1, start_ms=NOW_MS)
        publish(reg.topic(), reg.batch(3, later))
        wait_until(lambda: len(stored(db_url, reg.gateway_id, "pump-9")) == 9, what="the new point stored")

    with psycopg.connect(db_url) as conn:
        site, model, profile = conn.execute(
            "SELECT s.slug, d.equipment_model, d.profile FROM devices d JOIN sites s ON s.id = d.site_id"
            " WHERE d.id = %s",
            (device_id,),
        ).fetchone()
        units = dict(conn.execute("SELECT tag, unit FROM series WHERE device_id = %s", (device_id,)).fetchall())
        held = conn.execute("SELECT count(*) FROM held_points").fetchone()[0]
    assert (site, model, profile) == (reg.site, "P100", "pump-p100@1")
    assert units == {"temp": "degC", "flow": ""}
    assert held == 0
    assert letters(db_url, reg.gateway) == []


def _hold(writer: TelemetryWriter, reg: Registered, key: str, points: list[Point], seq: int = 1) -> None:
    """Hold ``points`` of the unregistered device ``key`` as ingest does, without the broker."""
    topic = reg.topic()
    writer.write([], holds=[HoldWrite(topic, reg.site, reg.gateway, reg.gateway_id, key, seq, False, 0, points)])


def test_concurrent_accepts_register_one_device_and_store_each_held_point_once(db_url: str, uid: str) -> None:
    """Four accepts of the same discovered device at once: one device, every held point stored exactly once."""
    reg = register(db_url, uid, devices=())
    points = pts("pump-7", "temp", 50)
    writer = TelemetryWriter(db_url)
    try:
        _hold(writer, reg, "pump-7", points)
    finally:
        writer.close()
    found = discovered(db_url, reg, "pump-7")
    assert found is not None and found.held_points == 50

    from ingest.discovery import accept

    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def one() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                start.wait()
                got = accept(conn, found.id, {}, by="test")
                results.append((got.device_id, got.stored))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len({d for d, _ in results}) == 1 and sum(n for _, n in results) == 50
    assert stored(db_url, reg.gateway_id, "pump-7") == as_rows(points)


def test_the_hold_is_bounded_with_a_dead_letter_a_metric_and_a_warning(
    db_url: str, mqtt_url: str, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Beyond max_points the rest is dead-lettered as hold_full (replayable); near the bound ingest warns and the
    fill metric says so; beyond max_devices a further unknown device is dead-lettered as unknown_device."""
    reg = register(db_url, uid, devices=("pump-1",))
    limits = HoldLimits(max_points=5, max_devices=1, warn_ratio=0.6)
    client_id = f"ing-{uid}"
    caplog.set_level(logging.WARNING, logger="ingest")
    with (
        running(db_url, mqtt_url, client_id, reg.site, hold=limits) as w,
        publisher(mqtt_url, f"pub-{uid}") as publish,
    ):
        publish(reg.topic(), reg.batch(1, pts("pump-9", "temp", 3)))
        wait_until(lambda: w.stats.messages >= 1)
        assert "near its bound" in caplog.text  # 3 of 5 >= 60 %
        publish(reg.topic(), reg.batch(2, pts("pump-9", "temp", 5, start_ms=NOW_MS - 10_000)))
        publish(reg.topic(), reg.batch(3, pts("pump-8", "temp", 2)))
        wait_until(lambda: w.stats.messages >= 3)
    found = discovered(db_url, reg, "pump-9")
    assert found is not None and found.held_points == 5
    assert discovered(db_url, reg, "pump-8") is None
    assert sorted(letters(db_url, reg.gateway)) == [("hold_full", 3), ("unknown_device", 2)]
    assert "is full" in caplog.text
    assert REGISTRY.get_sample_value("fieldwatch_ingest_held_points_total", {"worker": client_id}) == 5
    assert REGISTRY.get_sample_value("fieldwatch_ingest_hold_fill_ratio", {"gateway": reg.gateway}) == 1.0
    assert REGISTRY.get_sample_value("fieldwatch_ingest_held_points_pending", {"gateway": reg.gateway}) == 5
    assert (
        REGISTRY.get_sample_value("fieldwatch_ingest_dead_letters_total", {"worker": client_id, "reason": "hold_full"})
        == 1
    )


def test_held_points_past_their_age_are_dead_lettered_and_replayable(db_url: str, uid: str) -> None:
    """The expiry job moves points held longer than max_age to dead letters (hold_expired); after the device is
    accepted, replaying them stores them."""
    reg = register(db_url, uid, devices=())
    points = pts("pump-5", "temp", 4)
    writer = TelemetryWriter(db_url)
    try:
        _hold(writer, reg, "pump-5", points)
    finally:
        writer.close()
    assert expire_held(db_url, max_age_s=3600) == 0  # not old yet
    assert expire_held(db_url, max_age_s=0) == 4
    assert letters(db_url, reg.gateway) == [("hold_expired", 4)]
    found = discovered(db_url, reg, "pump-5")
    assert found is not None and found.held_points == 0 and found.state == "pending"

    from ingest.deadletters import DeadLetterFilter, replay
    from ingest.discovery import accept

    with psycopg.connect(db_url, autocommit=True) as conn:
        accept(conn, found.id, {}, by="test")
    report = replay(db_url, DeadLetterFilter(gateway=reg.gateway))
    assert (report.replayed, report.stored) == (1, 4)
    assert stored(db_url, reg.gateway_id, "pump-5") == as_rows(points)
    assert letters(db_url, reg.gateway) == []


def test_a_gateway_with_auto_accept_registers_what_it_announces(db_url: str, mqtt_url: str, uid: str) -> None:
    """With auto_accept on the gateway, an announced device is registered at once (with its units) and its data
    is stored as it arrives."""
    reg = register(db_url, uid, devices=())
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE gateways SET auto_accept = true WHERE id = %s", (reg.gateway_id,))
    with running(db_url, mqtt_url, f"ing-{uid}", reg.site) as w, publisher(mqtt_url, f"pub-{uid}") as publish:
        publish(reg.topic("status"), status(reg, **{"pump-3": {"temp": "degC", "flow": "m3/h"}}))
        publish(reg.topic(), reg.batch(1, pts("pump-3", "temp", 3) + pts("pump-4", "flow", 2)))
        wait_until(lambda: w.stats.messages >= 2)
        wait_until(lambda: len(stored(db_url, reg.gateway_id, "pump-3")) == 3)
        assert len(stored(db_url, reg.gateway_id, "pump-4")) == 2  # seen in data only: accepted too
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT d.key, s.tag, s.unit FROM series s JOIN devices d ON d.id = s.device_id"
            " WHERE d.gateway_id = %s ORDER BY 1, 2",
            (reg.gateway_id,),
        ).fetchall()
        decided = conn.execute("SELECT DISTINCT decided_by FROM discovered_devices").fetchall()
    assert rows == [("pump-3", "flow", "m3/h"), ("pump-3", "temp", "degC"), ("pump-4", "flow", "")]
    assert decided == [("auto",)]
    assert letters(db_url, reg.gateway) == []


def test_rejecting_dead_letters_held_and_later_points_and_forgetting_rediscovers(db_url: str, uid: str) -> None:
    """A rejected device's held points and later points become dead letters (rejected_device), visible in the
    gateway's status; a forgotten one is discovered again by its next point."""
    reg = register(db_url, uid, devices=())
    writer = TelemetryWriter(db_url)
    try:
        _hold(writer, reg, "pump-x", pts("pump-x", "temp", 3))
        found = discovered(db_url, reg, "pump-x")
        assert found is not None
        with api_client(db_url) as api:
            engineer = auth(token(db_url, "field_engineer"))
            r = api.post(f"{BASE}/discovered/{found.id}/reject", headers=engineer)
            assert r.status_code == 200 and r.json()["state"] == "rejected", r.text
            _hold(writer, reg, "pump-x", pts("pump-x", "temp", 2, start_ms=NOW_MS - 5_000), seq=2)
            assert letters(db_url, reg.gateway) == [("rejected_device", 3), ("rejected_device", 2)]
            gw = api.get(f"{BASE}/gateways/{reg.gateway_id}", headers=engineer).json()
            assert gw["healthy"] is False
            assert any("5 points rejected since" in p and "'pump-x'" in p for p in gw["problems"]), gw["problems"]

            assert api.delete(f"{BASE}/discovered/{found.id}", headers=engineer).status_code == 403
            admin = auth(token(db_url, "admin"))
            assert api.delete(f"{BASE}/discovered/{found.id}", headers=admin).status_code == 200
            assert api.get(f"{BASE}/discovered/{found.id}", headers=engineer).status_code == 404
        _hold(writer, reg, "pump-x", pts("pump-x", "temp", 1, start_ms=NOW_MS - 1_000), seq=3)
    finally:
        writer.close()
    again = discovered(db_url, reg, "pump-x")
    assert again is not None and again.id != found.id and again.state == "pending" and again.held_points == 1


def test_registering_a_discovered_device_by_hand_stores_its_held_points(db_url: str, uid: str) -> None:
    """Registering the device through the registry API (instead of accepting it) also stores what was held."""
    reg = register(db_url, uid, devices=())
    points = pts("pump-6", "temp", 4)
    writer = TelemetryWriter(db_url)
    try:
        _hold(writer, reg, "pump-6", points)
    finally:
        writer.close()
    site_id = scalar(db_url, "SELECT site_id FROM gateways WHERE id = %s", (reg.gateway_id,))
    with api_client(db_url) as api:
        body = {"site_id": site_id, "gateway_id": reg.gateway_id, "key": "pump-6", "equipment_model": "P100"}
        r = api.post(f"{BASE}/devices", json=body, headers=auth(token(db_url, "admin")))
        assert r.status_code == 201, r.text
    assert stored(db_url, reg.gateway_id, "pump-6") == as_rows(points)
    with psycopg.connect(db_url) as conn:
        found = get_discovered(conn, discovered(db_url, reg, "pump-6").id)
    assert (found.state, found.device_id, found.held_points) == ("accepted", r.json()["id"], 0)


def test_units_announced_by_the_gateway_fill_its_series(db_url: str, mqtt_url: str, uid: str) -> None:
    """A registered device's series without a unit get the announced one; an announced tag gets its series with
    its unit before its first point; a unit somebody set is kept."""
    reg = register(db_url, uid, devices=("pump-1",))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO series (device_id, tag, unit) VALUES (%s, 'temp', ''), (%s, 'flow', 'l/s')",
            (reg.devices["pump-1"], reg.devices["pump-1"]),
        )
    announced = {"temp": "degC", "flow": "m3/h", "vibration": "mm/s", "status": ""}
    with running(db_url, mqtt_url, f"ing-{uid}", reg.site) as w, publisher(mqtt_url, f"pub-{uid}") as publish:
        publish(reg.topic("status"), status(reg, **{"pump-1": announced}))
        wait_until(lambda: w.stats.messages >= 1)
    with psycopg.connect(db_url) as conn:
        units = dict(
            conn.execute("SELECT tag, unit FROM series WHERE device_id = %s", (reg.devices["pump-1"],)).fetchall()
        )
    assert units == {"temp": "degC", "flow": "l/s", "vibration": "mm/s", "status": ""}


async def test_a_gateway_announces_its_tags_and_ingest_discovers_the_device_nobody_registered(
    db_url: str, mqtt_url: str, tmp_path, names: tuple[str, str], sim
) -> None:
    """A real gateway polling two pumps, one registered: the registered one's series carry the profile's units,
    the other is discovered with every tag and unit of its profile and its readings are held."""
    import asyncio

    from gateway import Gateway, parse_config
    from tests.support.gateways import config_data, pump

    site, gw_slug = names
    reg = register(db_url, site.removeprefix("site-"), devices=("pump-1",))
    assert (reg.site, reg.gateway) == names
    known = reg.devices["pump-1"]
    config = parse_config(config_data(names, tmp_path, pump(sim.port, "pump-1"), pump(sim.port, "pump-2")))
    gateway = Gateway(config)
    worker = IngestWorker(db_url, mqtt_url, client_id=f"ing-{gw_slug}", session_expiry_s=SESSION_S, site_filter=site)
    await asyncio.to_thread(worker.start)
    try:
        await gateway.start()

        def held() -> int:
            found = discovered(db_url, reg, "pump-2")
            return found.held_points if found else 0

        await asyncio.to_thread(wait_until, held, 20, what="pump-2 readings held")
    finally:
        await gateway.stop()
        await asyncio.to_thread(worker.stop)
        forget_session(mqtt_url, f"ing-{gw_slug}")
    found = discovered(db_url, reg, "pump-2")
    assert found.profile == "pump-p100@1"
    assert found.tags["flow"] == "m3/h" and found.tags["bearing_temp"] == "degC" and found.tags["status"] == ""
    with psycopg.connect(db_url) as conn:
        units = dict(conn.execute("SELECT tag, unit FROM series WHERE device_id = %s", (known,)).fetchall())
    assert units["flow"] == "m3/h" and units["run_hours"] == "h"
    assert letters(db_url, gw_slug) == []


def test_a_gateway_whose_discovered_devices_hold_points_is_not_deleted(db_url: str, uid: str) -> None:
    """Deleting the gateway would cascade to the held points: refused with what to do, until they are dealt with."""
    reg = register(db_url, uid, devices=())
    writer = TelemetryWriter(db_url)
    try:
        _hold(writer, reg, "pump-2", pts("pump-2", "temp", 2))
    finally:
        writer.close()
    with api_client(db_url) as api:
        admin = auth(token(db_url, "admin"))
        r = api.delete(f"{BASE}/gateways/{reg.gateway_id}", headers=admin)
        assert r.status_code == 409 and "holding 2 points" in r.json()["detail"]
        found = discovered(db_url, reg, "pump-2")
        assert api.delete(f"{BASE}/discovered/{found.id}", headers=admin).json() == {"dead_lettered": 2}
        assert api.delete(f"{BASE}/gateways/{reg.gateway_id}", headers=admin).status_code == 204
    assert letters(db_url, reg.gateway) == [("unknown_device", 2)]


def test_points_arriving_while_an_accept_commits_are_stored_under_the_new_device(db_url: str, uid: str) -> None:
    """A worker holding points for a device whose accept is mid-transaction waits for it, then stores its points
    under the accepted device: nothing is left held, nothing dead-lettered, nothing stored twice."""
    reg = register(db_url, uid, devices=())
    first, late = pts("pump-5", "temp", 3), pts("pump-5", "temp", 2, start_ms=NOW_MS - 5_000)
    writer = TelemetryWriter(db_url)
    try:
        _hold(writer, reg, "pump-5", first)
        found = discovered(db_url, reg, "pump-5")
        from ingest.discovery import accept

        errors: list[BaseException] = []

        def hold_late() -> None:
            try:
                _hold(writer, reg, "pump-5", late, seq=2)
            except BaseException as exc:  # reported below
                errors.append(exc)

        with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
            accepted = accept(conn, found.id, {}, by="test")  # committed only when this block ends
            worker = threading.Thread(target=hold_late)
            worker.start()
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            waiting += " AND wait_event_type = 'Lock'"
            wait_until(lambda: scalar(db_url, waiting), what="the worker's hold waiting for the discovered row")
        worker.join(10)
        assert errors == [] and not worker.is_alive()
    finally:
        writer.close()
    assert accepted.stored == 3
    assert stored(db_url, reg.gateway_id, "pump-5") == as_rows(first + late)
    assert scalar(db_url, "SELECT count(*) FROM held_points") == 0
    assert letters(db_url, reg.gateway) == []
