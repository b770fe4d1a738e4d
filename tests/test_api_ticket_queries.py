"""Querying tickets over the HTTP API: filters, sorting and paging on real rows, and the plan and SLA
each ticket carries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.support.api import BASE, Seeded, seeded_api


@dataclass
class Desk:
    s: Seeded
    ids: dict[str, int]  # assigned, unassigned (the seed's), late, risk, ben0, done
    zeta: int  # the second client


@pytest.fixture(scope="module")
def desk(admin_db_url: str, template_db: str) -> Iterator[Desk]:
    """Besides the seed's two Acme tickets (Ana's, created a minute ago and due in 4 h; and an unassigned
    one on plant-b without a target): a platinum client's late ticket, Ben's route of two stops on Acme
    pumps (the second planned after it is due), and a resolved ticket two days old."""
    with seeded_api(admin_db_url, template_db, role="dispatcher") as s:
        f = s.fleet
        ids = dict(f.tickets)
        with psycopg.connect(s.url, autocommit=True) as conn:

            def one(query: str, params: tuple[Any, ...]) -> int:
                row = conn.execute(query, params).fetchone()
                assert row is not None
                return int(row[0])

            zeta = one("INSERT INTO clients (name, segment) VALUES ('Zeta Foods', 'platinum') RETURNING id", ())
            site = one(
                "INSERT INTO sites (client_id, slug, name, latitude, longitude) "
                "VALUES (%s, 'plant-z', 'Zeta', 48.2, 11.6) RETURNING id",
                (zeta,),
            )
            pump_z = one(
                "INSERT INTO devices (site_id, key, name, equipment_model) VALUES (%s, 'pump-z', 'Pump Z', 'P100') "
                "RETURNING id",
                (site,),
            )

            def ticket(device: int, code: str, priority: int, status: str, created: str, due: str | None) -> int:
                return one(
                    "INSERT INTO tickets (device_id, problem_code, title, priority, status, created_at, due_at) "
                    "VALUES (%s, %s, %s, %s, %s, now() - %s::interval, now() + %s::interval) RETURNING id",
                    (device, code, code.lower(), priority, status, created, due),
                )

            ids["late"] = ticket(pump_z, "LATE", 1, "new", "3 hours", "-10 minutes")
            ids["risk"] = ticket(f.devices["pump-2"], "RISK", 3, "assigned", "2 hours", "2 hours")
            ids["ben0"] = ticket(f.devices["pump-1"], "SEAL", 2, "en_route", "90 minutes", "3 hours")
            ids["done"] = ticket(pump_z, "DONE", 4, "resolved", "2 days", "-1 day")
            for key, seq, start in (("ben0", 0, "30 minutes"), ("risk", 1, "5 hours")):
                conn.execute(
                    "INSERT INTO assignments (ticket_id, technician_id, distance_km, eta_minutes, reason, sequence, "
                    "eta_at, planned_start, planned_end) VALUES (%s, %s, 10, 15, 'route', %s, "
                    "now() + %s::interval - interval '10 minutes', now() + %s::interval, "
                    "now() + %s::interval + interval '1 hour')",
                    (ids[key], f.technicians["ben"], seq, start, start, start),
                )
        yield Desk(s, ids, zeta)


def _ids(desk: Desk, **params: Any) -> list[int]:
    r = desk.s.api.get(f"{BASE}/tickets", params=params, headers=desk.s.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] >= len(body["items"])
    return [t["id"] for t in body["items"]]


def _names(desk: Desk, ids: list[int]) -> set[str]:
    by_id = {v: k for k, v in desk.ids.items()}
    return {by_id[i] for i in ids}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": ["new", "en_route"]}, {"unassigned", "late", "ben0"}),
        ({"client_id": "zeta"}, {"late", "done"}),
        ({"site": "plant-b"}, {"unassigned", "risk"}),
        ({"segment": "platinum"}, {"late", "done"}),
        ({"technician_id": "ben"}, {"risk", "ben0"}),
        ({"priority": [1, 4]}, {"late", "done"}),
        ({"sla": "breached"}, {"late"}),
        ({"sla": "at_risk"}, {"risk"}),
        ({"sla": "on_track"}, {"assigned", "ben0"}),
        ({"from": "-150", "to": "-45"}, {"risk", "ben0"}),  # created between 2.5 h and 45 min ago
        ({"segment": "gold", "sla": "on_track", "technician_id": "ana"}, {"assigned"}),
        ({"site": "plant-b", "priority": [3], "status": ["new"]}, {"unassigned"}),
    ],
)
def test_every_filter_narrows_the_list_and_they_combine(desk: Desk, params: dict[str, Any], expected: set) -> None:
    """Each filter (status, client, site, segment, technician, priority, SLA state, creation time range)
    keeps exactly the matching tickets, and several filters keep only tickets matching all of them."""
    from datetime import UTC, datetime, timedelta

    resolved = dict(params)
    if "client_id" in resolved:
        resolved["client_id"] = desk.zeta
    if "technician_id" in resolved:
        resolved["technician_id"] = desk.s.fleet.technicians[resolved["technician_id"]]
    for end in ("from", "to"):
        if end in resolved:
            resolved[end] = (datetime.now(UTC) + timedelta(minutes=int(resolved[end]))).isoformat()
    assert _names(desk, _ids(desk, **resolved)) == expected


def test_sorts_order_the_whole_list(desk: Desk) -> None:
    """Priority puts the most urgent first, due_at the least SLA time left first (no target last), route each
    technician's stops in planned order, and the default is newest first."""
    names = lambda **p: [{v: k for k, v in desk.ids.items()}[i] for i in _ids(desk, **p)]  # noqa: E731
    assert names() == ["assigned", "unassigned", "ben0", "risk", "late", "done"]
    assert names(sort="created_at") == ["done", "late", "risk", "ben0", "unassigned", "assigned"]
    assert names(sort="priority") == ["late", "assigned", "ben0", "unassigned", "risk", "done"]
    assert names(sort="-priority") == ["done", "unassigned", "risk", "assigned", "ben0", "late"]
    assert names(sort="due_at") == ["done", "late", "risk", "ben0", "assigned", "unassigned"]
    assert names(sort="route")[:3] == ["assigned", "ben0", "risk"]  # Ana Ortiz's one stop, then Ben's two
    assert names(sort="planned_start")[:2] == ["ben0", "risk"]


def test_pages_cut_the_sorted_filtered_list_and_count_all_of_it(desk: Desk) -> None:
    """limit/offset page through the sorted, filtered list; total counts every match, not the page."""
    r = desk.s.api.get(
        f"{BASE}/tickets",
        params={"sort": "priority", "status": ["new", "assigned", "en_route"], "limit": 2, "offset": 1},
        headers=desk.s.headers,
    ).json()
    assert (r["total"], r["limit"], r["offset"]) == (5, 2, 1)
    assert [t["id"] for t in r["items"]] == [desk.ids["assigned"], desk.ids["ben0"]]
    last = _ids(desk, sort="priority", status=["new", "assigned", "en_route"], limit=2, offset=4)
    assert last == [desk.ids["risk"]]


def test_each_ticket_carries_its_route_stop_and_sla_time_left(desk: Desk) -> None:
    """A ticket shows its stop on the technician's route (order, arrival, planned start and end) and the
    seconds left until its response SLA is due: negative when late, null once it has ended."""
    get = lambda key: desk.s.api.get(f"{BASE}/tickets/{desk.ids[key]}", headers=desk.s.headers).json()  # noqa: E731
    risk, late, done = get("risk"), get("late"), get("done")
    a = risk["assignment"]
    assert a["technician_name"] == "Ben Bauer" and a["route_order"] == 1
    assert a["eta_at"] < a["planned_start"] < a["planned_end"]
    assert risk["sla_remaining_s"] == pytest.approx(7200, abs=120) and risk["sla_state"] == "at_risk"
    assert (risk["client"], risk["segment"]) == ("Acme Water", "gold")
    assert late["sla_remaining_s"] == pytest.approx(-600, abs=120) and late["sla_state"] == "breached"
    assert (done["sla_remaining_s"], done["sla_state"]) == (None, None)


@pytest.mark.parametrize("params", [{"sort": "fastest"}, {"sla": "late"}, {"priority": 9}])
def test_unknown_sort_or_filter_values_are_422(desk: Desk, params: dict[str, Any]) -> None:
    """A sort or filter value the API does not know is refused with 422, not ignored."""
    assert desk.s.api.get(f"{BASE}/tickets", params=params, headers=desk.s.headers).status_code == 422
