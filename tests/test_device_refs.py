"""One device reference everywhere: id, SITE/KEY, GATEWAY/KEY or a unique KEY resolve to the same device in
history import, backtests and rule scopes; an ambiguous reference is refused naming the candidates."""

from __future__ import annotations

import psycopg
import pytest

from fwcore.devices import AmbiguousDeviceRef, UnknownDeviceRef, resolve_device_ref
from ingest.history import HistoryError
from ingest.history import resolve_device as history_device
from rules.devices import UnknownDevice, load_devices
from rules.devices import resolve_device as rules_device
from rules.model import Scope
from tests.support.api import seed


def test_every_form_names_the_same_device_in_every_domain(db_url: str) -> None:
    """id, site/key, gateway/key and a unique key give the same device to the resolver, history and rules."""
    fleet = seed(db_url)
    pump = fleet.devices["pump-1"]
    with psycopg.connect(db_url) as conn:
        for ref in (str(pump), pump, "plant-a/pump-1", "gw-a/pump-1", "pump-1"):
            assert resolve_device_ref(conn, ref) == pump
            assert history_device(conn, str(ref))[0] == pump
            assert rules_device(conn, ref).id == pump
        with pytest.raises(UnknownDeviceRef, match="no device 'plant-b/pump-1'; write it as device id, SITE/KEY"):
            resolve_device_ref(conn, "plant-b/pump-1")
        with pytest.raises(HistoryError, match="no device"):
            history_device(conn, "gw-b/pump-1")
        with pytest.raises(UnknownDevice, match="no device"):
            rules_device(conn, "999999")


def test_a_key_at_two_sites_must_be_qualified(db_url: str) -> None:
    """A key two sites use is ambiguous alone (the message lists both as site/key) and resolves once qualified."""
    fleet = seed(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        (other,) = conn.execute(
            "INSERT INTO devices (site_id, gateway_id, key, equipment_model) VALUES (%s, %s, 'pump-1', 'P100') "
            "RETURNING id",
            (fleet.sites["plant-b"], fleet.gateways["gw-b"]),
        ).fetchone()  # type: ignore[misc]
        with pytest.raises(AmbiguousDeviceRef, match=r"it names plant-a/pump-1 \(id \d+\), plant-b/pump-1"):
            resolve_device_ref(conn, "pump-1")
        with pytest.raises(UnknownDevice, match="ambiguous"):
            rules_device(conn, "pump-1")
        assert resolve_device_ref(conn, "gw-b/pump-1") == resolve_device_ref(conn, "plant-b/pump-1") == other


def test_rule_scope_matches_gateway_key(db_url: str) -> None:
    """A rule scoped to `gateway/key` watches that device and not its namesake elsewhere."""
    fleet = seed(db_url)
    with psycopg.connect(db_url) as conn:
        devices = load_devices(conn, [fleet.devices["pump-1"], fleet.devices["pump-2"]])
    scope = Scope(devices=["gw-a/pump-1", "plant-b/pump-2"])
    assert scope.matches(devices[fleet.devices["pump-1"]]) and scope.matches(devices[fleet.devices["pump-2"]])
    assert not Scope(devices=["gw-b/pump-1"]).matches(devices[fleet.devices["pump-1"]])


def test_api_lists_the_device_a_reference_names(db_url: str) -> None:
    """GET /devices?ref= takes every form of reference: found (200, one item), unknown (404), ambiguous (422)."""
    from tests.support.api import BASE, api_client, auth, token

    fleet = seed(db_url)
    h = auth(token(db_url, "viewer"))
    with api_client(db_url) as api:
        found = {
            ref: api.get(f"{BASE}/devices", params={"ref": ref}, headers=h).json()
            for ref in ("plant-a/pump-1", "gw-a/pump-1", "pump-1", str(fleet.devices["pump-1"]))
        }
        unknown = api.get(f"{BASE}/devices", params={"ref": "plant-b/pump-1"}, headers=h)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'pump-1', 'P100')",
                (fleet.sites["plant-b"],),
            )
        ambiguous = api.get(f"{BASE}/devices", params={"ref": "pump-1"}, headers=h)
    assert all([d["id"] for d in body["items"]] == [fleet.devices["pump-1"]] for body in found.values())
    assert unknown.status_code == 404 and "no device 'plant-b/pump-1'" in unknown.json()["detail"]
    assert ambiguous.status_code == 422 and "is ambiguous" in ambiguous.json()["detail"][0]["msg"]


def test_api_paths_name_a_device_by_any_reference(db_url: str) -> None:
    """/devices/{device}, its /latest and /record, PATCH and the history import take an id, SITE/KEY (as is
    or %2F-encoded), GATEWAY/KEY or a unique key; a sub-resource word is never read as a key; unknown is
    404 and ambiguous 422 naming the candidates."""
    from tests.support.api import BASE, api_client, auth, token

    fleet = seed(db_url)
    pump = fleet.devices["pump-1"]
    viewer, admin = auth(token(db_url, "viewer")), auth(token(db_url, "admin"))
    refs = (str(pump), "plant-a/pump-1", "plant-a%2Fpump-1", "gw-a/pump-1", "pump-1")
    with api_client(db_url) as api:
        one = {ref: api.get(f"{BASE}/devices/{ref}", headers=viewer) for ref in refs}
        latest = {ref: api.get(f"{BASE}/devices/{ref}/latest", headers=viewer) for ref in refs}
        record = {ref: api.get(f"{BASE}/devices/{ref}/record", headers=viewer) for ref in refs}
        changed = api.patch(f"{BASE}/devices/gw-a/pump-1", json={"equipment_model": "P200"}, headers=admin)
        imported = api.post(
            f"{BASE}/devices/plant-a/pump-1/history",
            content="time,flow\n2026-12-01T00:00:00Z,12.5\n",
            headers={**admin, "Content-Type": "text/csv"},
        )
        unknown = api.get(f"{BASE}/devices/plant-b/pump-1/latest", headers=viewer)
        junk = api.get(f"{BASE}/devices/99999999999999999999999", headers=viewer)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'pump-1', 'P100')",
                (fleet.sites["plant-b"],),
            )
        ambiguous = api.get(f"{BASE}/devices/pump-1", headers=viewer)
    assert {ref: (r.status_code, r.json()["id"]) for ref, r in one.items()} == {ref: (200, pump) for ref in refs}
    assert all(r.status_code == 200 and r.json()["device_id"] == pump for r in latest.values()), latest
    assert all(r.status_code == 200 and r.json()["id"] == pump for r in record.values()), record
    assert changed.status_code == 200 and changed.json()["equipment_model"] == "P200"
    assert imported.status_code == 200 and imported.json()["inserted"] == 1, imported.text
    assert unknown.status_code == 404 and "no device 'plant-b/pump-1'" in unknown.json()["detail"]
    assert junk.status_code == 404
    assert ambiguous.status_code == 422 and "is ambiguous" in ambiguous.json()["detail"][0]["msg"]
