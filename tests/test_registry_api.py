"""The asset registry over the HTTP API: create/read/update/delete with validation and clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest

from tests.support.api import BASE, TestClient, api_client, auth, token, write_points


@dataclass
class Api:
    url: str
    client: TestClient
    admin: dict[str, str]
    reader: dict[str, str]

    def post(self, path: str, body: dict) -> dict:
        r = self.client.post(f"{BASE}{path}", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url) as client:
        yield Api(db_url, client, auth(token(db_url, "admin")), auth(token(db_url, "dispatcher")))


def _fleet(api: Api) -> dict[str, int]:
    client = api.post("/clients", {"name": "Acme", "segment": "gold"})
    site = api.post(
        "/sites",
        {
            "client_id": client["id"],
            "slug": "plant-a",
            "name": "Plant A",
            "address": "1 Main St",
            "latitude": 48.1,
            "longitude": 11.5,
        },
    )
    gw = api.post("/gateways", {"site_id": site["id"], "slug": "gw-a"})
    dev = api.post(
        "/devices",
        {
            "site_id": site["id"],
            "gateway_id": gw["id"],
            "key": "pump-1",
            "equipment_model": "P100",
            "serial": "SN-1",
            "profile": "pump-p100",
        },
    )
    series = api.post("/series", {"device_id": dev["id"], "tag": "flow", "unit": "m3/h"})
    return {
        "client": client["id"],
        "site": site["id"],
        "gateway": gw["id"],
        "device": dev["id"],
        "series": series["id"],
    }


def test_create_read_update_delete_a_whole_fleet(api: Api) -> None:
    """Every resource can be created, read by any role, patched field by field and deleted leaf first."""
    ids = _fleet(api)
    c = api.client
    dev = c.get(f"{BASE}/devices/{ids['device']}/record", headers=api.reader).json()
    assert (dev["profile"], dev["serial"], dev["gateway_id"]) == ("pump-p100", "SN-1", ids["gateway"])
    assert c.get(f"{BASE}/devices/{ids['device']}", headers=api.reader).json()["client"]["segment"] == "gold"
    gw = c.get(f"{BASE}/gateways/{ids['gateway']}", headers=api.reader).json()
    assert (gw["site"], gw["seq_gaps"], gw["last_seq"]) == ("plant-a", 0, None)
    r = c.patch(f"{BASE}/sites/{ids['site']}", json={"latitude": 50.0}, headers=api.admin)
    assert r.status_code == 200 and (r.json()["latitude"], r.json()["name"]) == (50.0, "Plant A")
    r = c.patch(f"{BASE}/devices/{ids['device']}", json={"gateway_id": None}, headers=api.admin)
    assert r.status_code == 200 and r.json()["gateway_id"] is None
    assert c.get(f"{BASE}/series", params={"device_id": ids["device"]}, headers=api.reader).json()["total"] == 1
    assert c.get(f"{BASE}/sites", params={"client_id": ids["client"]}, headers=api.reader).json()["total"] == 1
    for kind in ("series", "devices", "gateways", "sites", "clients"):
        key = {"series": "series", "devices": "device", "gateways": "gateway", "sites": "site", "clients": "client"}
        r = c.delete(f"{BASE}/{kind}/{ids[key[kind]]}", headers=api.admin)
        assert r.status_code == 204, (kind, r.text)
        assert c.get(f"{BASE}/clients/{ids['client']}", headers=api.reader).status_code == (
            404 if kind == "clients" else 200
        )


def test_writes_need_admin_reads_any_role(api: Api) -> None:
    """A non-admin token may read the registry but gets 403 on writes."""
    r = api.client.post(f"{BASE}/clients", json={"name": "X", "segment": "gold"}, headers=api.reader)
    assert r.status_code == 403
    assert api.client.get(f"{BASE}/clients", headers=api.reader).status_code == 200
    assert api.client.get(f"{BASE}/clients").status_code == 401


def test_duplicates_are_409_with_the_key(api: Api) -> None:
    """A second site with the same slug, or a second series with the same tag, is 409 naming the key."""
    ids = _fleet(api)
    r = api.client.post(
        f"{BASE}/sites",
        json={"client_id": ids["client"], "slug": "plant-a", "name": "again", "latitude": 0, "longitude": 0},
        headers=api.admin,
    )
    assert r.status_code == 409 and r.json()["detail"] == "a site with slug 'plant-a' already exists"
    r = api.client.post(f"{BASE}/series", json={"device_id": ids["device"], "tag": "flow"}, headers=api.admin)
    assert r.status_code == 409 and "device_id, tag" in r.json()["detail"]
    r = api.client.patch(f"{BASE}/clients/{ids['client']}", json={"name": "Acme"}, headers=api.admin)
    assert r.status_code == 200  # renaming to its own name is no conflict


@pytest.mark.parametrize(
    ("path", "body", "field", "msg"),
    [
        ("/clients", {"name": "B", "segment": "diamond"}, "segment", "unknown segment 'diamond'; known segments: "),
        (
            "/sites",
            {"client_id": 999, "slug": "s", "name": "S", "latitude": 0, "longitude": 0},
            "client_id",
            "client_id 999 does not exist",
        ),
        ("/sites", {"client_id": 1, "slug": "Bad/Slug", "name": "S", "latitude": 0, "longitude": 0}, "slug", ""),
        ("/sites", {"client_id": 1, "slug": "s", "name": "S", "latitude": 91, "longitude": 0}, "latitude", ""),
        ("/gateways", {"site_id": 999, "slug": "g"}, "site_id", "site_id 999 does not exist"),
        ("/gateways", {"site_id": 1, "slug": "g", "colour": "red"}, "colour", ""),
        ("/series", {"device_id": 999, "tag": "t"}, "device_id", "device_id 999 does not exist"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(api: Api, path: str, body: dict, field: str, msg: str) -> None:
    """Unknown references, bad slugs, out-of-range coordinates and unknown fields are 422 with the field in loc."""
    r = api.client.post(f"{BASE}{path}", json=body, headers=api.admin)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(e["loc"][-1] == field and msg in e["msg"] for e in errors), errors


def test_device_gateway_must_be_on_the_same_site(api: Api) -> None:
    """A device polled by a gateway of another site is refused (ingest resolves devices per gateway)."""
    ids = _fleet(api)
    other = api.post(
        "/sites", {"client_id": ids["client"], "slug": "plant-b", "name": "B", "latitude": 0, "longitude": 0}
    )
    r = api.client.post(
        f"{BASE}/devices",
        json={"site_id": other["id"], "gateway_id": ids["gateway"], "key": "p", "equipment_model": "P"},
        headers=api.admin,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "gateway_id"]
    r = api.client.patch(f"{BASE}/gateways/{ids['gateway']}", json={"site_id": other["id"]}, headers=api.admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "site_id"]
    r = api.client.patch(f"{BASE}/devices/{ids['device']}", json={"site_id": None}, headers=api.admin)
    assert r.status_code == 422 and "may not be null" in r.json()["detail"][0]["msg"]


def test_deleting_what_is_still_referenced_is_409(api: Api) -> None:
    """Clients with sites, sites with gateways, gateways with devices, devices with series and series with
    telemetry are not deleted; the message says what is in the way."""
    ids = _fleet(api)
    with psycopg.connect(api.url, autocommit=True) as conn:
        write_points(conn, ids["series"], [(datetime.now(UTC), 1.0, 0)])
    expect = {
        "clients": (ids["client"], "still referenced by sites"),
        "sites": (ids["site"], "still referenced by"),
        "gateways": (ids["gateway"], "still polls 1 device"),
        "devices": (ids["device"], "still has 1 series (flow)"),
        "series": (ids["series"], "still has telemetry"),
    }
    for kind, (ident, msg) in expect.items():
        r = api.client.delete(f"{BASE}/{kind}/{ident}", headers=api.admin)
        assert r.status_code == 409 and msg in r.json()["detail"], (kind, r.text)
    assert api.client.delete(f"{BASE}/clients/424242", headers=api.admin).status_code == 404
    assert api.client.patch(f"{BASE}/sites/424242", json={"name": "x"}, headers=api.admin).status_code == 404
