"""Alarms over the HTTP API: listing, filtering and acknowledging."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.api import BASE, Seeded, api_client, auth, seed, seeded_api, token


@pytest.fixture(scope="module")
def s(admin_db_url: str, template_db: str) -> Iterator[Seeded]:
    with seeded_api(admin_db_url, template_db) as seeded:
        yield seeded


def test_alarms_newest_first_with_rule_and_device(s: Seeded) -> None:
    """The list is ordered by opening time, newest first, and names rule, problem, device and site."""
    body = s.api.get(f"{BASE}/alarms", headers=s.headers).json()
    assert [a["id"] for a in body["items"]] == [s.fleet.alarms[k] for k in ("active", "acknowledged", "cleared")]
    active = body["items"][0]
    assert (active["rule_name"], active["problem_code"], active["device_name"], active["site"]) == (
        "bearing hot",
        "BEARING_HOT",
        "Pump 1",
        "plant-a",
    )
    assert (active["state"], active["trigger_value"], active["acknowledged_by"]) == ("active", 86.0, None)
    # A device without a display name is shown by its key.
    assert body["items"][1]["device_name"] == "pump-2"


@pytest.mark.parametrize(
    ("state", "key"), [("active", "active"), ("acknowledged", "acknowledged"), ("cleared", "cleared")]
)
def test_alarms_filter_by_state(s: Seeded, state: str, key: str) -> None:
    """`state` keeps only alarms in that state."""
    body = s.api.get(f"{BASE}/alarms", params={"state": state}, headers=s.headers).json()
    assert [a["id"] for a in body["items"]] == [s.fleet.alarms[key]] and body["total"] == 1


def test_alarms_filter_by_device_and_bad_state(s: Seeded) -> None:
    """`device_id` narrows the list; an unknown state is 422."""
    body = s.api.get(f"{BASE}/alarms", params={"device_id": s.fleet.devices["pump-1"]}, headers=s.headers).json()
    assert sorted(a["id"] for a in body["items"]) == sorted([s.fleet.alarms["active"], s.fleet.alarms["cleared"]])
    assert s.api.get(f"{BASE}/alarms", params={"state": "open"}, headers=s.headers).status_code == 422


def test_alarm_by_id_and_404(s: Seeded) -> None:
    """One alarm by id; an unknown id is 404."""
    r = s.api.get(f"{BASE}/alarms/{s.fleet.alarms['acknowledged']}", headers=s.headers)
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "night shift"
    assert s.api.get(f"{BASE}/alarms/31337", headers=s.headers).json() == {"detail": "alarm 31337 does not exist"}


def test_acknowledge_records_who_and_when(db_url: str) -> None:
    """Acknowledging an active alarm sets its state, time and the token's name, and is stored."""
    fleet = seed(db_url)
    tok = token(db_url, "reliability_engineer", name="Rita (reliability)")
    aid = fleet.alarms["active"]
    with api_client(db_url) as api:
        r = api.post(f"{BASE}/alarms/{aid}/acknowledge", headers=auth(tok))
    assert r.status_code == 200
    body = r.json()
    assert (body["state"], body["acknowledged_by"]) == ("acknowledged", "Rita (reliability)")
    assert body["acknowledged_at"] is not None
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT state, acknowledged_by, acknowledged_at FROM alarms WHERE id = %s", (aid,))
        state, by, at = row.fetchone()
    assert (state, by) == ("acknowledged", "Rita (reliability)") and at is not None


def test_acknowledge_twice_keeps_the_first_acknowledgement(db_url: str) -> None:
    """A repeated acknowledge is 200 and does not overwrite who acknowledged first."""
    fleet = seed(db_url)
    first, second = token(db_url, "dispatcher", name="Dora"), token(db_url, "dispatcher", name="Dan")
    aid = fleet.alarms["active"]
    with api_client(db_url) as api:
        a = api.post(f"{BASE}/alarms/{aid}/acknowledge", headers=auth(first)).json()
        r = api.post(f"{BASE}/alarms/{aid}/acknowledge", headers=auth(second))
    assert r.status_code == 200
    assert (r.json()["acknowledged_by"], r.json()["acknowledged_at"]) == ("Dora", a["acknowledged_at"])


def test_acknowledging_a_cleared_alarm_is_409(db_url: str) -> None:
    """A cleared alarm cannot be acknowledged; it stays as it was."""
    fleet = seed(db_url)
    with api_client(db_url) as api:
        r = api.post(f"{BASE}/alarms/{fleet.alarms['cleared']}/acknowledge", headers=auth(token(db_url, "admin")))
        after = api.get(f"{BASE}/alarms/{fleet.alarms['cleared']}", headers=auth(token(db_url, "admin"))).json()
    assert r.status_code == 409
    assert "is cleared" in r.json()["detail"]
    assert (after["state"], after["acknowledged_by"]) == ("cleared", None)


def test_acknowledging_an_unknown_alarm_is_404(db_url: str) -> None:
    """An id that names no alarm is 404, also for writes."""
    with api_client(db_url) as api:
        r = api.post(f"{BASE}/alarms/5/acknowledge", headers=auth(token(db_url, "dispatcher")))
    assert r.status_code == 404
