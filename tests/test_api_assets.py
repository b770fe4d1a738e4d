"""Devices, latest values, raw series points and gateways over the HTTP API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from tests.support.api import BASE, Seeded, api_client, auth, seed, seeded_api, token, write_points


@pytest.fixture(scope="module")
def s(admin_db_url: str, template_db: str) -> Iterator[Seeded]:
    with seeded_api(admin_db_url, template_db) as seeded:
        yield seeded


def test_devices_list_with_site_and_client(s: Seeded) -> None:
    """Each device carries its site, client, model and serial; the page says how many there are."""
    r = s.api.get(f"{BASE}/devices", headers=s.headers)
    assert r.status_code == 200
    body = r.json()
    assert (body["total"], body["limit"], body["offset"]) == (2, 100, 0)
    first = body["items"][0]
    assert first["id"] == s.fleet.devices["pump-1"]
    assert (first["key"], first["name"], first["equipment_model"], first["serial"]) == (
        "pump-1",
        "Pump 1",
        "P100",
        "SN-001",
    )
    assert first["site"]["slug"] == "plant-a" and first["site"]["latitude"] == 48.14
    assert first["client"] == {"id": s.fleet.client, "name": "Acme Water", "segment": "gold"}
    assert first["gateway"] == "gw-a"
    assert first["attributes"] == {"power_kw": 15}


def test_devices_filter_by_site_and_paginate(s: Seeded) -> None:
    """`site` (slug) and `site_id` narrow the list; limit/offset page through it."""
    by_slug = s.api.get(f"{BASE}/devices", params={"site": "plant-b"}, headers=s.headers).json()
    assert [d["key"] for d in by_slug["items"]] == ["pump-2"] and by_slug["total"] == 1
    by_id = s.api.get(f"{BASE}/devices", params={"site_id": s.fleet.sites["plant-a"]}, headers=s.headers).json()
    assert [d["key"] for d in by_id["items"]] == ["pump-1"]
    page2 = s.api.get(f"{BASE}/devices", params={"limit": 1, "offset": 1}, headers=s.headers).json()
    assert [d["key"] for d in page2["items"]] == ["pump-2"] and page2["total"] == 2
    assert s.api.get(f"{BASE}/devices", params={"site": "nowhere"}, headers=s.headers).json()["items"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"site_id": "x"}])
def test_bad_paging_parameters_are_422(s: Seeded, params: dict) -> None:
    """Out-of-range or mistyped query parameters are rejected by validation."""
    assert s.api.get(f"{BASE}/devices", params=params, headers=s.headers).status_code == 422


def test_device_by_id_and_404(s: Seeded) -> None:
    """A device is found by id; an unknown id is 404 with a message naming it and how to write one."""
    r = s.api.get(f"{BASE}/devices/{s.fleet.devices['pump-2']}", headers=s.headers)
    assert r.status_code == 200 and r.json()["site"]["slug"] == "plant-b" and r.json()["gateway"] == "gw-b"
    r = s.api.get(f"{BASE}/devices/999999", headers=s.headers)
    assert r.status_code == 404
    assert r.json() == {
        "detail": "no device '999999'; write it as device id, SITE/KEY, GATEWAY/KEY, or a KEY "
        "unique in the fleet (`fieldwatch fleet devices list`)"
    }


def test_latest_value_per_series_is_the_newest_point(s: Seeded) -> None:
    """The newest point wins (whatever the insert order); a series without data shows nulls."""
    r = s.api.get(f"{BASE}/devices/{s.fleet.devices['pump-1']}/latest", headers=s.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["device_id"] == s.fleet.devices["pump-1"]
    got = {v["tag"]: (v["value"], v["quality"], v["unit"]) for v in body["values"]}
    assert got == {
        "bearing_temp": (72.5, 0, "degC"),
        "flow": (6.5, 1, "m3/h"),
        "vibration": (None, None, "mm/s"),
    }
    temp = next(v for v in body["values"] if v["tag"] == "bearing_temp")
    assert temp["series_id"] == s.fleet.series["pump-1/bearing_temp"]
    assert temp["time"].replace("Z", "+00:00") == (s.fleet.now - timedelta(minutes=1)).isoformat()


def test_latest_of_unknown_device_is_404(s: Seeded) -> None:
    """Latest values of a device that does not exist is 404, not an empty list."""
    assert s.api.get(f"{BASE}/devices/424242/latest", headers=s.headers).status_code == 404


def test_series_points_default_to_the_last_hour_in_time_order(s: Seeded) -> None:
    """Without from/to the last hour is returned, oldest first; older points are left out."""
    r = s.api.get(f"{BASE}/series/{s.fleet.series['pump-1/bearing_temp']}/points", headers=s.headers)
    assert r.status_code == 200
    body = r.json()
    assert [p["value"] for p in body["points"]] == [70.0, 71.0, 72.5]
    assert (body["tag"], body["unit"], body["truncated"]) == ("bearing_temp", "degC", False)
    assert set(body) >= {"from", "to"}
    old = s.api.get(f"{BASE}/series/{s.fleet.series['pump-2/bearing_temp']}/points", headers=s.headers).json()
    assert old["points"] == []


def test_series_range_is_half_open(s: Seeded) -> None:
    """`from` is inclusive and `to` exclusive, so adjacent windows never count a point twice."""
    sid = s.fleet.series["pump-1/bearing_temp"]
    t1, t3 = s.fleet.now - timedelta(minutes=2), s.fleet.now - timedelta(minutes=1)
    r = s.api.get(
        f"{BASE}/series/{sid}/points", params={"from": t1.isoformat(), "to": t3.isoformat()}, headers=s.headers
    )
    assert [p["value"] for p in r.json()["points"]] == [71.0]
    r = s.api.get(
        f"{BASE}/series/{sid}/points",
        params={"from": t3.isoformat(), "to": (t3 + timedelta(seconds=1)).isoformat()},
        headers=s.headers,
    )
    assert [p["value"] for p in r.json()["points"]] == [72.5]


def test_naive_timestamps_are_taken_as_utc(s: Seeded) -> None:
    """A `from`/`to` without a zone means UTC."""
    sid = s.fleet.series["pump-1/bearing_temp"]
    t1 = s.fleet.now - timedelta(minutes=2)
    naive = t1.replace(tzinfo=None).isoformat()
    r = s.api.get(
        f"{BASE}/series/{sid}/points", params={"from": naive, "to": s.fleet.now.isoformat()}, headers=s.headers
    )
    assert [p["value"] for p in r.json()["points"]] == [71.0, 72.5]


def test_series_limit_truncates_and_says_so(s: Seeded) -> None:
    """With more points than `limit` the oldest `limit` come back and `truncated` is true."""
    sid = s.fleet.series["pump-1/bearing_temp"]
    body = s.api.get(f"{BASE}/series/{sid}/points", params={"limit": 2}, headers=s.headers).json()
    assert [p["value"] for p in body["points"]] == [70.0, 71.0] and body["truncated"] is True


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 100_001},
        {"limit": 0},
        {"from": "yesterday"},
        {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    ],
)
def test_series_bad_ranges_are_422(s: Seeded, params: dict) -> None:
    """A limit over 100k, an unparsable time or an inverted window is a validation error."""
    r = s.api.get(f"{BASE}/series/{s.fleet.series['pump-1/flow']}/points", params=params, headers=s.headers)
    assert r.status_code == 422


def test_unknown_series_is_404(s: Seeded) -> None:
    """Points of a series that does not exist is 404."""
    r = s.api.get(f"{BASE}/series/777777/points", headers=s.headers)
    assert r.status_code == 404 and "series 777777" in r.json()["detail"]


def test_gateways_show_status_and_sequence_health(s: Seeded) -> None:
    """Gateways list their birth/death status, last committed sequence and gap count; filters work."""
    body = s.api.get(f"{BASE}/gateways", headers=s.headers).json()
    got = {g["slug"]: (g["site"], g["status"], g["last_seq"], g["seq_gaps"]) for g in body["items"]}
    assert got == {"gw-a": ("plant-a", "online", 42, 1), "gw-b": ("plant-b", "offline", None, 0)}
    offline = s.api.get(f"{BASE}/gateways", params={"status": "offline"}, headers=s.headers).json()
    assert [g["slug"] for g in offline["items"]] == ["gw-b"]
    assert s.api.get(f"{BASE}/gateways", params={"status": "sleepy"}, headers=s.headers).status_code == 422


def test_large_range_query_spans_partitions(db_url: str) -> None:
    """Points across several daily partitions come back in one ordered answer, up to the limit."""
    fleet = seed(db_url)
    sid = fleet.series["pump-1/vibration"]
    start = fleet.now - timedelta(days=3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        write_points(conn, sid, [(start + timedelta(minutes=10 * i), float(i), 0) for i in range(3 * 144)])
    with api_client(db_url) as api:
        r = api.get(
            f"{BASE}/series/{sid}/points",
            headers=auth(token(db_url, "admin")),
            params={"from": start.isoformat(), "to": fleet.now.isoformat(), "limit": 100_000},
        )
    values = [p["value"] for p in r.json()["points"]]
    assert values == [float(i) for i in range(3 * 144)]
