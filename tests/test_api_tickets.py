"""Tickets over the HTTP API, with their active assignment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import BASE, Seeded, seeded_api


@pytest.fixture(scope="module")
def s(admin_db_url: str, template_db: str) -> Iterator[Seeded]:
    with seeded_api(admin_db_url, template_db, role="dispatcher") as seeded:
        yield seeded


def test_ticket_shows_its_active_assignment(s: Seeded) -> None:
    """A ticket carries the technician, distance, ETA and reason of its active assignment only."""
    r = s.api.get(f"{BASE}/tickets/{s.fleet.tickets['assigned']}", headers=s.headers)
    assert r.status_code == 200
    t = r.json()
    assert (t["status"], t["priority"], t["problem_code"], t["device_name"], t["site"]) == (
        "assigned",
        2,
        "BEARING_HOT",
        "Pump 1",
        "plant-a",
    )
    assert t["alarm_id"] == s.fleet.alarms["active"] and t["required_skill"] == "pump_mech"
    a = t["assignment"]
    assert (a["technician_id"], a["technician_name"], a["distance_km"], a["eta_minutes"], a["reason"]) == (
        s.fleet.technicians["ana"],
        "Ana Ortiz",
        12.5,
        18.0,
        "nearest qualified technician",
    )


def test_unassigned_ticket_says_why(s: Seeded) -> None:
    """Without an active assignment, `assignment` is null and the unassigned reason is shown."""
    t = s.api.get(f"{BASE}/tickets/{s.fleet.tickets['unassigned']}", headers=s.headers).json()
    assert t["assignment"] is None
    assert t["unassigned_reason"] == "no available technician has skill electrical"


def test_tickets_newest_first_and_filter_by_status(s: Seeded) -> None:
    """The list is newest first, one row per ticket; `status` filters and must be a known status."""
    body = s.api.get(f"{BASE}/tickets", headers=s.headers).json()
    assert [t["id"] for t in body["items"]] == [s.fleet.tickets["assigned"], s.fleet.tickets["unassigned"]]
    assert body["total"] == 2
    new = s.api.get(f"{BASE}/tickets", params={"status": "new"}, headers=s.headers).json()
    assert [t["id"] for t in new["items"]] == [s.fleet.tickets["unassigned"]]
    by_device = s.api.get(f"{BASE}/tickets", params={"device_id": s.fleet.devices["pump-1"]}, headers=s.headers)
    assert [t["id"] for t in by_device.json()["items"]] == [s.fleet.tickets["assigned"]]
    assert s.api.get(f"{BASE}/tickets", params={"status": "open"}, headers=s.headers).status_code == 422


def test_unknown_ticket_is_404(s: Seeded) -> None:
    """An id that names no ticket is 404."""
    r = s.api.get(f"{BASE}/tickets/987654", headers=s.headers)
    assert r.status_code == 404 and r.json() == {"detail": "ticket 987654 does not exist"}
