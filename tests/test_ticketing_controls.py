"""Dispatcher controls and the field API over HTTP: validated assignment with recorded overrides,
pins, the ticket lifecycle with GPS, notes, parts and photo evidence."""

from __future__ import annotations

import psycopg

from tests.support import dispatch
from tests.support.api import BASE, api_client, auth, token
from tests.support.dispatch import NOW, World, assignment, new_ticket, service
from ticketing import create_technician

world = dispatch.world  # the same fixture: two pumps, Ana near Munich, Bo near Augsburg


def _assigned_ticket(world: World) -> int:
    t = new_ticket(world.url, world.devices["a"], "P1")
    with service(world) as svc:
        svc.dispatch_ticket(t)
    return t


def test_dispatcher_reassigns_and_a_broken_constraint_needs_an_override_with_reason(world: World) -> None:
    """Moving a job to Bo works; to Cy (no pump skill) is refused until override + reason, which is recorded."""
    with psycopg.connect(world.url) as conn:
        cy = create_technician(conn, name="Cy", email="cy@x", home_lat=48.14, home_lon=11.58).id
    t = _assigned_ticket(world)
    headers = auth(token(world.url, "dispatcher", name="dora"))
    with api_client(world.url) as api:
        r = api.post(f"{BASE}/tickets/{t}/assign", json={"technician_id": world.techs["Bo"]}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["overridden"] == [] and r.json()["explanation"]["dispatcher"]["actor"] == "dora"
        assert assignment(world.url, t)["name"] == "Bo" and assignment(world.url, t)["origin"] == "dispatcher"
        refused = api.post(f"{BASE}/tickets/{t}/assign", json={"technician_id": cy}, headers=headers)
        assert refused.status_code == 409 and "lacks skill pump" in refused.json()["detail"]
        no_reason = api.post(
            f"{BASE}/tickets/{t}/assign", json={"technician_id": cy, "override": True}, headers=headers
        )
        assert no_reason.status_code == 409 and "needs a reason" in no_reason.json()["detail"]
        ok = api.post(
            f"{BASE}/tickets/{t}/assign",
            json={"technician_id": cy, "override": True, "reason": "customer asked for Cy"},
            headers=headers,
        )
        assert ok.status_code == 200 and "lacks skill pump" in ok.json()["overridden"][0]
        explained = api.get(f"{BASE}/tickets/{t}/explanation", headers=headers).json()
        assert explained["technician_name"] == "Cy" and "override: customer asked for Cy" in explained["reason"]
        reader = auth(token(world.url, "field_engineer"))
        assert api.post(f"{BASE}/tickets/{t}/assign", json={"technician_id": cy}, headers=reader).status_code == 403
    with psycopg.connect(world.url) as conn:
        rows = conn.execute("SELECT actor, reason, violations FROM dispatch_overrides").fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("dora", "customer asked for Cy") and "lacks skill pump" in rows[0][2][0]


def test_pin_moves_the_ticket_and_unpin_releases_it(world: World) -> None:
    """Pinning to Bo moves the ticket and stores the pin; unpinning clears it."""
    t = _assigned_ticket(world)
    headers = auth(token(world.url, "dispatcher"))
    with api_client(world.url) as api:
        r = api.put(f"{BASE}/tickets/{t}/pin", json={"technician_id": world.techs["Bo"]}, headers=headers)
        assert r.status_code == 200, r.text
        assert (
            api.get(f"{BASE}/tickets/{t}/explanation", headers=headers).json()["pinned_technician_id"]
            == world.techs["Bo"]
        )
        assert assignment(world.url, t)["name"] == "Bo"
        assert api.delete(f"{BASE}/tickets/{t}/pin", headers=headers).status_code == 204
        assert api.get(f"{BASE}/tickets/{t}/explanation", headers=headers).json()["pinned_technician_id"] is None
        assert api.put(f"{BASE}/tickets/999/pin", json={"technician_id": 1}, headers=headers).status_code == 404


def test_field_lifecycle_with_gps_notes_parts_and_time_on_site(world: World) -> None:
    """en_route → on_site → resolved → closed with GPS and parts; skipping a step or reopening is refused."""
    with psycopg.connect(world.url) as conn:
        conn.execute("INSERT INTO parts (code) VALUES ('seal')")
        conn.execute("INSERT INTO van_stock VALUES (%s, 'seal', 3)", (world.techs["Ana"],))
    t = _assigned_ticket(world)
    headers = auth(token(world.url, "field_engineer", name="ana-phone", technician=world.techs["Ana"]))
    url = f"{BASE}/tickets/{t}/status"
    with api_client(world.url) as api:
        skip = api.post(url, json={"status": "resolved"}, headers=headers)
        assert skip.status_code == 409 and "en_route" in skip.json()["detail"]
        assert (
            api.post(url, json={"status": "en_route", "lat": 48.15, "lon": 11.58}, headers=headers).status_code == 200
        )
        assert (
            api.post(url, json={"status": "on_site", "lat": 48.1374, "lon": 11.5755}, headers=headers).status_code
            == 200
        )
        done = api.post(
            url,
            json={
                "status": "resolved",
                "note": "bearing replaced",
                "failure_code": "BRG-WEAR",
                "parts_used": {"seal": 2},
            },
            headers=headers,
        )
        assert done.status_code == 200, done.text
        tl = done.json()
        assert [h["status"] for h in tl["history"]] == ["new", "assigned", "en_route", "on_site", "resolved"]
        assert tl["history"][3]["lat"] == 48.1374 and tl["history"][3]["actor"] == "ana-phone"
        assert tl["failure_code"] == "BRG-WEAR" and tl["notes"][0]["body"] == "bearing replaced"
        assert tl["parts_used"][0]["quantity"] == 2 and tl["time_on_site_minutes"] is not None
        assert api.post(url, json={"status": "closed"}, headers=headers).status_code == 200
        assert api.post(url, json={"status": "en_route"}, headers=headers).status_code == 409
    with psycopg.connect(world.url) as conn:
        assert conn.execute("SELECT quantity FROM van_stock").fetchone()[0] == 1
        assert (
            conn.execute("SELECT current_lat FROM technicians WHERE id = %s", (world.techs["Ana"],)).fetchone()[0]
            == 48.1374
        )
    assert assignment(world.url, t) is None  # the technician is free again


def test_photo_evidence_is_stored_with_geotag_and_time(world: World) -> None:
    """A JPEG upload keeps its bytes, geotag and time; a non-image body is refused with 422."""
    t = _assigned_ticket(world)
    headers = auth(token(world.url, "field_engineer", technician=world.techs["Ana"]))  # Ana holds the ticket
    jpeg = b"\xff\xd8\xff\xe0fake-jpeg-bytes"
    with api_client(world.url) as api:
        r = api.post(
            f"{BASE}/tickets/{t}/photos",
            content=jpeg,
            params={"lat": 48.1, "lon": 11.5, "taken_at": NOW.isoformat()},
            headers={**headers, "Content-Type": "image/jpeg"},
        )
        assert r.status_code == 201, r.text
        meta = r.json()
        assert (meta["lat"], meta["lon"], meta["size"]) == (48.1, 11.5, len(jpeg))
        listed = api.get(f"{BASE}/tickets/{t}/photos", headers=headers).json()
        assert [p["id"] for p in listed] == [meta["id"]]
        got = api.get(f"{BASE}/tickets/{t}/photos/{meta['id']}", headers=headers)
        assert got.content == jpeg and got.headers["content-type"] == "image/jpeg"
        bad = api.post(
            f"{BASE}/tickets/{t}/photos", content=b"hello", headers={**headers, "Content-Type": "text/plain"}
        )
        assert bad.status_code == 422


def test_work_orders_are_idempotent_by_external_id_and_placed_at_once(world: World) -> None:
    """The same CRM order twice makes one ticket (201 then 200), assigned to Ana with an SLA due time."""
    headers = auth(token(world.url, "dispatcher"))
    order = {
        "source": "crm",
        "external_id": "SO-1001",
        "device_id": world.devices["a"],
        "title": "Commissioning",
        "problem_code": "COMMISSION",
        "required_skill": "pump",
        "service_minutes": 90,
    }
    with api_client(world.url) as api:
        first = api.post(f"{BASE}/workorders", json=order, headers=headers)
        again = api.post(f"{BASE}/workorders", json=order, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200), first.text
        assert first.json()["id"] == again.json()["id"]
        other = api.post(f"{BASE}/workorders", json={**order, "external_id": "SO-1002"}, headers=headers)
        assert other.status_code == 409 and "already has an open ticket" in other.json()["detail"]
        unknown = api.post(
            f"{BASE}/workorders", json={**order, "external_id": "SO-3", "device_id": 999}, headers=headers
        )
        assert unknown.status_code == 422
    with psycopg.connect(world.url) as conn:
        rows = conn.execute("SELECT id, status, due_at IS NOT NULL, service_minutes FROM tickets").fetchall()
    assert len(rows) == 1 and rows[0][1:] == ("assigned", True, 90)
    assert assignment(world.url, rows[0][0])["name"] == "Ana"
