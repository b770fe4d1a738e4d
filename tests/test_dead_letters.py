"""Dead letters written by the real ingest worker: listed, filtered, shown, replayed after a fix and purged,
through the API and the CLI; counted by reason in metrics and in the gateway's status."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
import pytest

from ingest import IngestWorker
from ingest.hold import HoldLimits
from tests.support.api import BASE, TestClient, api_client, auth, token
from tests.support.mqtt import forget_session, publisher
from tests.support.registry import NOW_MS, Registered, pts, register
from tests.support.waits import wait_until

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))
DAY_MS = 86_400_000


@dataclass
class Rejected:
    """A gateway whose worker dead-lettered: 4 points of unregistered pump-9 (one of them 100 days old),
    one point from the future, and one message that is not JSON."""

    url: str
    reg: Registered


@pytest.fixture
def rejected(db_url: str, mqtt_url: str, uid: str) -> Iterator[Rejected]:
    reg = register(db_url, uid, devices=("pump-1",))
    client_id = f"ing-{uid}"
    # Holding off: unknown devices are dead-lettered as before discovery existed (discovery_hold_max_points=0).
    worker = IngestWorker(
        db_url, mqtt_url, client_id=client_id, batch_max_wait_ms=20, site_filter=reg.site, hold=HoldLimits(max_points=0)
    )
    worker.start()
    try:
        with publisher(mqtt_url, f"pub-{uid}") as publish:
            unknown = pts("pump-9", "temp", 3) + pts("pump-9", "temp", 1, start_ms=NOW_MS - 100 * DAY_MS)
            publish(reg.topic(), reg.batch(1, pts("pump-1", "temp", 2) + unknown))
            publish(reg.topic(), reg.batch(2, pts("pump-1", "temp", 1, start_ms=NOW_MS + DAY_MS)))
            publish(reg.topic(), b"{not json")
            wait_until(lambda: worker.stats.messages >= 3, what="three messages committed")
    finally:
        worker.stop()
        forget_session(mqtt_url, client_id)
    yield Rejected(db_url, reg)


def _reasons(url: str, gateway: str) -> list[tuple[str, int, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT reason, points, replays FROM dead_letters WHERE gateway = %s ORDER BY reason", (gateway,)
        ).fetchall()


def _stored(url: str, gateway_id: int, key: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM telemetry t JOIN series s ON s.id = t.series_id JOIN devices d ON d.id = s.device_id"
            " WHERE d.gateway_id = %s AND d.key = %s",
            (gateway_id, key),
        ).fetchone()[0]


def _register_pump_9(api: TestClient, url: str, reg: Registered, admin: dict[str, str]) -> None:
    with psycopg.connect(url) as conn:
        site_id = conn.execute("SELECT site_id FROM gateways WHERE id = %s", (reg.gateway_id,)).fetchone()[0]
    body = {"site_id": site_id, "gateway_id": reg.gateway_id, "key": "pump-9", "equipment_model": "P100"}
    r = api.post(f"{BASE}/devices", json=body, headers=admin)
    assert r.status_code == 201, r.text


def test_dead_letters_are_listed_filtered_replayed_after_a_fix_and_purged_over_the_api(rejected: Rejected) -> None:
    """Any role lists and filters dead letters and reads one with its payload; only admin replays and purges;
    replay after registering the device stores what now passes and keeps what still fails with its new reason."""
    url, reg = rejected.url, rejected.reg
    with api_client(url) as api:
        reader, admin = auth(token(url, "field_engineer")), auth(token(url, "admin"))

        def listed(**params: object) -> dict:
            r = api.get(f"{BASE}/dead-letters", params=params, headers=reader)
            assert r.status_code == 200, r.text
            return r.json()

        every = listed(gateway=reg.gateway)
        assert every["total"] == 3
        assert sorted(i["reason"] for i in every["items"]) == ["future_timestamp", "invalid_json", "unknown_device"]
        assert listed(gateway=reg.gateway, reason="unknown_device")["total"] == 1
        assert listed(gateway=reg.gateway, device="pump-9")["total"] == 1
        assert listed(gateway=reg.gateway, device="pump-1")["total"] == 1  # the future point
        assert listed(gateway="gw-nobody")["total"] == 0
        assert listed(gateway=reg.gateway, **{"from": "2999-01-01T00:00:00Z"})["total"] == 0
        page = listed(gateway=reg.gateway, limit=1, offset=1)
        assert (page["total"], len(page["items"])) == (3, 1)

        unknown = listed(gateway=reg.gateway, reason="unknown_device")["items"][0]
        assert (unknown["points"], unknown["devices"], unknown["site"]) == (4, ["pump-9"], reg.site)
        one = api.get(f"{BASE}/dead-letters/{unknown['id']}", headers=reader).json()
        assert {p["device"] for p in orjson.loads(one["payload_text"])["points"]} == {"pump-9"}
        assert api.get(f"{BASE}/dead-letters/999999", headers=reader).status_code == 404

        assert api.post(f"{BASE}/dead-letters/replay", headers=reader).status_code == 403
        assert api.delete(f"{BASE}/dead-letters", params={"reason": "invalid_json"}, headers=reader).status_code == 403

        _register_pump_9(api, url, reg, admin)
        r = api.post(f"{BASE}/dead-letters/{unknown['id']}/replay", headers=admin)
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["replayed"], report["stored"], report["still_failing"]) == (1, 3, {"too_old": 1})
        assert _stored(url, reg.gateway_id, "pump-9") == 3
        kept = api.get(f"{BASE}/dead-letters/{unknown['id']}", headers=reader).json()
        assert (kept["reason"], kept["points"], kept["replays"]) == ("too_old", 1, 1)  # the same row, new reason

        r = api.post(f"{BASE}/dead-letters/replay", params={"gateway": reg.gateway}, headers=admin)
        assert r.json()["still_failing"] == {"too_old": 1, "future_timestamp": 1, "invalid_json": 1}

        assert api.delete(f"{BASE}/dead-letters", headers=admin).status_code == 422  # no filter: refused
        r = api.delete(f"{BASE}/dead-letters", params={"gateway": reg.gateway, "reason": "invalid_json"}, headers=admin)
        assert r.json() == {"purged": 1}
    assert _reasons(url, reg.gateway) == [("future_timestamp", 1, 1), ("too_old", 1, 2)]


def test_the_gateway_status_names_its_rejections_until_they_are_purged(rejected: Rejected) -> None:
    """GET /gateways/{id} says "N points rejected since T: …" per reason and is not healthy; after a purge it is."""
    url, reg = rejected.url, rejected.reg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE gateways SET status = 'online', status_at = now() WHERE id = %s", (reg.gateway_id,))
    with api_client(url) as api:
        reader, admin = auth(token(url, "dispatcher")), auth(token(url, "admin"))
        gw = api.get(f"{BASE}/gateways/{reg.gateway_id}", headers=reader).json()
        assert gw["healthy"] is False
        problems = " | ".join(gw["problems"])
        assert "4 points rejected since" in problems and "unknown device 'pump-9'" in problems
        assert "1 points rejected since" not in problems and "1 point rejected since" in problems
        assert "1 message rejected since" in problems and "invalid_json" in problems
        by_reason = {r["reason"]: r for r in gw["rejections"]}
        assert (by_reason["unknown_device"]["points"], by_reason["unknown_device"]["devices"]) == (4, ["pump-9"])

        r = api.delete(f"{BASE}/dead-letters", params={"gateway": reg.gateway}, headers=admin)
        assert r.json() == {"purged": 3}
        gw = api.get(f"{BASE}/gateways/{reg.gateway_id}", headers=reader).json()
        assert (gw["healthy"], gw["problems"], gw["rejections"]) == (True, [], [])


def test_metrics_count_stored_dead_letters_by_reason(rejected: Rejected) -> None:
    """/metrics shows the dead letters stored now, by reason, read from the database at scrape time."""
    with api_client(rejected.url) as api:
        text = api.get("/metrics", headers=auth(token(rejected.url, "viewer"))).text
    assert 'fieldwatch_dead_letters{reason="unknown_device"} 1.0' in text
    assert 'fieldwatch_dead_letters{reason="invalid_json"} 1.0' in text
    assert 'fieldwatch_dead_letter_points{reason="unknown_device"} 4.0' in text


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FIELDWATCH, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FIELDWATCH_DATABASE_URL": url, "COLUMNS": "200"},
    )


def test_the_cli_lists_shows_replays_and_purges(rejected: Rejected) -> None:
    """`fieldwatch dead-letters list/show/replay/purge` work on the same rows, with filters; purge wants --yes."""
    url, reg = rejected.url, rejected.reg
    listed = _cli("dead-letters", "list", "--gateway", reg.gateway, "--reason", "future_timestamp", url=url)
    assert listed.returncode == 0, listed.stderr
    assert "future_timestamp" in listed.stdout and "unknown_device" not in listed.stdout
    assert "1 of 1" in listed.stdout
    with psycopg.connect(url) as conn:
        (letter_id,) = conn.execute(
            "SELECT id FROM dead_letters WHERE gateway = %s AND reason = 'unknown_device'", (reg.gateway,)
        ).fetchone()
    shown = _cli("dead-letters", "show", str(letter_id), url=url)
    assert shown.returncode == 0 and '"pump-9"' in shown.stdout and "unknown_device" in shown.stdout

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (site_id, gateway_id, key, equipment_model)"
            " SELECT site_id, id, 'pump-9', 'P100' FROM gateways WHERE id = %s",
            (reg.gateway_id,),
        )
    replayed = _cli("dead-letters", "replay", "--gateway", reg.gateway, "--reason", "unknown_device", url=url)
    assert replayed.returncode == 0, replayed.stderr
    assert "3 points stored" in replayed.stdout and "too_old: 1" in replayed.stdout
    assert _stored(url, reg.gateway_id, "pump-9") == 3

    refused = _cli("dead-letters", "purge", "--gateway", reg.gateway, url=url)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    purged = _cli("dead-letters", "purge", "--gateway", reg.gateway, "--reason", "invalid_json", "--yes", url=url)
    assert purged.returncode == 0 and "1 dead letter" in purged.stdout
    assert [r[0] for r in _reasons(url, reg.gateway)] == ["future_timestamp", "too_old"]


def test_the_cli_lists_and_accepts_discovered_devices(db_url: str, uid: str) -> None:
    """`fieldwatch devices discovered` lists a held device with its points; `devices accept ID` stores them."""
    from ingest.hold import HoldWrite
    from ingest.writer import TelemetryWriter

    reg = register(db_url, uid, devices=())
    points = pts("pump-4", "temp", 3)
    hold = HoldWrite(reg.topic(), reg.site, reg.gateway, reg.gateway_id, "pump-4", 1, False, 0, points)
    writer = TelemetryWriter(db_url)
    try:
        writer.write([], holds=[hold])
    finally:
        writer.close()
    listed = _cli("devices", "discovered", "--gateway", reg.gateway, url=db_url)
    assert listed.returncode == 0, listed.stderr
    assert "pump-4" in listed.stdout and "pending" in listed.stdout
    with psycopg.connect(db_url) as conn:
        (found_id,) = conn.execute("SELECT id FROM discovered_devices WHERE key = 'pump-4'").fetchone()
    accepted = _cli("devices", "accept", str(found_id), "--model", "P100", url=db_url)
    assert accepted.returncode == 0, accepted.stderr
    assert "3 held points stored" in accepted.stdout
    assert _stored(db_url, reg.gateway_id, "pump-4") == 3
    unknown = _cli("devices", "accept", "999999", url=db_url)
    assert unknown.returncode == 1 and "fieldwatch devices discovered" in unknown.stderr
