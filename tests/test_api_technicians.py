"""Technicians over the HTTP API: roster, adding people and reporting positions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import BASE, Seeded, api_client, auth, seed, seeded_api, token

NEW = {
    "name": "Cleo Chen",
    "email": "cleo@example.com",
    "home_lat": 48.2,
    "home_lon": 11.6,
    "skills": {"pump_mech": 3, "electrical": 5},
}


@pytest.fixture(scope="module")
def s(admin_db_url: str, template_db: str) -> Iterator[Seeded]:
    """A shared database for requests that are refused before they write."""
    with seeded_api(admin_db_url, template_db, role="dispatcher") as seeded:
        yield seeded


def test_roster_lists_skills_and_filters(db_url: str) -> None:
    """Each technician shows skills as {code: level}; `skill` and `available` filter the roster."""
    fleet = seed(db_url)
    h = auth(token(db_url, "dispatcher"))  # a dispatcher: field engineers do not see e-mails (test_permissions.py)
    with api_client(db_url) as api:
        body = api.get(f"{BASE}/technicians", headers=h).json()
        electricians = api.get(f"{BASE}/technicians", params={"skill": "electrical"}, headers=h).json()
        unavailable = api.get(f"{BASE}/technicians", params={"available": False}, headers=h).json()
        one = api.get(f"{BASE}/technicians/{fleet.technicians['ana']}", headers=h)
        missing = api.get(f"{BASE}/technicians/4040", headers=h)
    assert {t["name"]: t["skills"] for t in body["items"]} == {
        "Ana Ortiz": {"pump_mech": 4},
        "Ben Bauer": {"electrical": 2, "pump_mech": 1},
    }
    assert [t["name"] for t in electricians["items"]] == ["Ben Bauer"]
    assert unavailable["items"] == [] and unavailable["total"] == 0
    assert one.status_code == 200 and one.json()["email"] == "ana@example.com"
    assert missing.status_code == 404


def test_dispatcher_adds_a_technician_with_skills(db_url: str) -> None:
    """POST creates the technician (201, Location) with skills, and the roster then includes them."""
    seed(db_url)
    h = auth(token(db_url, "dispatcher"))
    with api_client(db_url) as api:
        r = api.post(f"{BASE}/technicians", json=NEW, headers=h)
        assert r.status_code == 201
        created = r.json()
        assert created["skills"] == {"pump_mech": 3, "electrical": 5}
        assert (created["available"], created["current_lat"], created["phone"]) == (True, None, "")
        assert r.headers["location"].endswith(f"{BASE}/technicians/{created['id']}")
        assert api.get(r.headers["location"], headers=h).json() == created


def test_technician_without_skills(db_url: str) -> None:
    """Skills are optional."""
    with api_client(db_url) as api:
        body = {k: v for k, v in NEW.items() if k != "skills"}
        r = api.post(f"{BASE}/technicians", json=body, headers=auth(token(db_url, "admin")))
    assert r.status_code == 201 and r.json()["skills"] == {}


def test_unknown_skill_is_422_naming_it(db_url: str) -> None:
    """A skill code that does not exist is refused (not created), and nothing is stored."""
    seed(db_url)
    h = auth(token(db_url, "dispatcher"))
    with api_client(db_url) as api:
        r = api.post(f"{BASE}/technicians", json={**NEW, "skills": {"plumbing": 2, "pump_mech": 1}}, headers=h)
        roster = api.get(f"{BASE}/technicians", headers=h).json()
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "skills"]
    assert err["msg"] == "unknown skill code(s): plumbing; known codes: electrical, pump_mech"
    assert roster["total"] == 2


def test_duplicate_email_is_409(db_url: str) -> None:
    """Emails identify technicians; a second one with the same email is a conflict."""
    seed(db_url)
    h = auth(token(db_url, "dispatcher"))
    with api_client(db_url) as api:
        r = api.post(f"{BASE}/technicians", json={**NEW, "email": "ana@example.com"}, headers=h)
    assert r.status_code == 409 and "ana@example.com" in r.json()["detail"]


@pytest.mark.parametrize(
    "change",
    [
        {"home_lat": 91},
        {"home_lon": -181},
        {"email": "not-an-email"},
        {"name": ""},
        {"skills": {"pump_mech": 6}},
        {"id": 5},
    ],
)
def test_invalid_technician_is_422(s: Seeded, change: dict) -> None:
    """Out-of-range coordinates, levels outside 1..5, bad emails and unknown fields are rejected."""
    r = s.api.post(f"{BASE}/technicians", json={**NEW, **change}, headers=s.headers)
    assert r.status_code == 422


@pytest.mark.parametrize("role", ["field_engineer", "reliability_engineer"])
def test_only_dispatchers_add_technicians(s: Seeded, role: str) -> None:
    """Adding technicians is for dispatchers (and admin)."""
    r = s.api.post(f"{BASE}/technicians", json=NEW, headers=auth(token(s.url, role)))
    assert r.status_code == 403 and "allowed roles: admin, dispatcher" in r.json()["detail"]


@pytest.mark.parametrize(
    ("role", "status"), [("field_engineer", 200), ("dispatcher", 200), ("reliability_engineer", 403)]
)
def test_location_update(db_url: str, role: str, status: int) -> None:
    """Field engineers (their own, with a token bound to them) and dispatchers report a technician's
    position; it shows as current_lat/lon."""
    fleet = seed(db_url)
    ben = fleet.technicians["ben"]
    with api_client(db_url) as api:
        r = api.put(
            f"{BASE}/technicians/{ben}/location",
            json={"lat": 48.5, "lon": 11.1},
            headers=auth(token(db_url, role, technician=ben)),
        )
    assert r.status_code == status
    if status == 200:
        assert (r.json()["current_lat"], r.json()["current_lon"]) == (48.5, 11.1)


def test_location_of_unknown_technician_is_404_and_bad_coordinates_422(db_url: str) -> None:
    """Unknown technician is 404; a latitude beyond 90 is 422."""
    fleet = seed(db_url)
    h = auth(token(db_url, "dispatcher"))
    with api_client(db_url) as api:
        assert api.put(f"{BASE}/technicians/999/location", json={"lat": 1, "lon": 1}, headers=h).status_code == 404
        path = f"{BASE}/technicians/{fleet.technicians['ana']}/location"
        assert api.put(path, json={"lat": 95, "lon": 1}, headers=h).status_code == 422
