"""The audit log: each audited change leaves exactly one entry, with who, before and after, written in
the transaction of the change; the table refuses updates and deletes; admins and dispatchers read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from fwcore import audit
from tests.support import dispatch
from tests.support.api import BASE, api_client, auth, seed, token
from tests.support.dispatch import World, new_ticket, service
from ticketing import create_technician
from ticketing.controls import transition
from ticketing.errors import InvalidTransition

world = dispatch.world  # two pumps; Ana (pump) near Munich, Bo (pump) near Augsburg

RULE = {
    "name": "hot bearing",
    "tag": "bearing_temp",
    "condition": {"kind": "above", "threshold": 80},
    "problem_code": "BEARING",
}


def _rows(url: str, action: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM audit_log WHERE action = %s ORDER BY id", (action,)).fetchall()


def _one_new(url: str, action: str, change: Callable[[], object]) -> dict[str, Any]:
    """Run ``change`` and return the single ``action`` entry it added (failing if it added none or two)."""
    before = len(_rows(url, action))
    change()
    rows = _rows(url, action)
    assert len(rows) == before + 1, f"{action}: {len(rows) - before} new entries"
    return rows[-1]


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response


def test_a_status_change_records_who_sent_it_and_the_status_before_and_after(db_url: str) -> None:
    """Ana's phone moving her ticket en route is one ticket.status entry naming her token, assigned → en_route."""
    fleet = seed(db_url)
    ticket = fleet.tickets["assigned"]
    tok = token(db_url, "technician", "ana-phone", technician=fleet.technicians["ana"])
    with api_client(db_url) as api:
        body = {"status": "en_route", "lat": 48.1, "lon": 11.5, "note": "on my way"}
        entry = _one_new(
            db_url,
            "ticket.status",
            lambda: _ok(api.post(f"{BASE}/tickets/{ticket}/status", json=body, headers=auth(tok))),
        )
    assert (entry["actor"], entry["actor_role"], entry["object_type"], entry["object_id"]) == (
        "ana-phone",
        "technician",
        "ticket",
        str(ticket),
    )
    assert entry["actor_token_id"] is not None
    assert entry["before"]["status"] == "assigned" and entry["after"]["status"] == "en_route"
    assert entry["after"]["note"] == "on my way" and entry["after"]["lat"] == 48.1


def test_a_refused_or_rolled_back_change_leaves_no_entry(db_url: str) -> None:
    """An invalid transition writes nothing, and neither does a change whose transaction is rolled back."""
    fleet = seed(db_url)
    ticket = fleet.tickets["assigned"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(InvalidTransition):
            transition(conn, ticket, "closed", actor="dora")
        with pytest.raises(RuntimeError), conn.transaction():
            transition(conn, ticket, "en_route", actor="dora")
            raise RuntimeError("the caller's transaction fails after the change")
        assert conn.execute("SELECT status FROM tickets WHERE id = %s", (ticket,)).fetchone()[0] == "assigned"
    assert _rows(db_url, "ticket.status") == []


def test_dispatcher_assignment_override_pin_and_unpin_are_each_one_entry(world: World) -> None:
    """An override to an unqualified technician records the broken constraints and the reason; pin and unpin too."""
    with psycopg.connect(world.url) as conn:
        cy = create_technician(conn, name="Cy", email="cy@x", home_lat=48.14, home_lon=11.58).id
    t = new_ticket(world.url, world.devices["a"], "P1")
    with service(world) as svc:
        svc.dispatch_ticket(t)
    h = auth(token(world.url, "dispatcher", "dora"))
    with api_client(world.url) as api:
        body = {"technician_id": cy, "override": True, "reason": "customer asked for Cy"}
        entry = _one_new(
            world.url, "ticket.assign", lambda: _ok(api.post(f"{BASE}/tickets/{t}/assign", json=body, headers=h))
        )
        assert entry["actor"] == "dora" and entry["before"] == {
            "status": "assigned",
            "technician_id": world.techs["Ana"],
        }
        assert entry["after"]["technician_id"] == cy and entry["after"]["override"] is True
        assert entry["after"]["reason"] == "customer asked for Cy" and "lacks skill pump" in entry["after"]["broken"][0]
        pin = {"technician_id": world.techs["Bo"]}
        pinned = _one_new(world.url, "ticket.pin", lambda: _ok(api.put(f"{BASE}/tickets/{t}/pin", json=pin, headers=h)))
        assert pinned["before"] == {"pinned_technician_id": None}
        assert pinned["after"]["pinned_technician_id"] == world.techs["Bo"]
        unpinned = _one_new(
            world.url, "ticket.unpin", lambda: _ok(api.delete(f"{BASE}/tickets/{t}/pin", headers=h), 204)
        )
        assert unpinned["before"] == {"pinned_technician_id": world.techs["Bo"]}
        assert unpinned["after"] == {"pinned_technician_id": None}


def test_rule_apply_and_rollback_record_the_definitions(db_url: str) -> None:
    """Applying v1 and v2 are two rule.apply entries; rolling back to v1 is one rule.rollback entry with v2 → v3."""
    h = auth(token(db_url, "reliability_engineer", "rita"))
    with api_client(db_url) as api:
        first = _one_new(
            db_url, "rule.apply", lambda: _ok(api.post(f"{BASE}/rules/apply", json={"rules": [RULE]}, headers=h))
        )
        assert first["before"] is None and first["after"]["version"] == 1
        hotter = {**RULE, "condition": {"kind": "above", "threshold": 90}}
        second = _one_new(
            db_url, "rule.apply", lambda: _ok(api.post(f"{BASE}/rules/apply", json={"rules": [hotter]}, headers=h))
        )
        assert second["before"]["version"] == 1 and second["after"]["version"] == 2
        back = _one_new(
            db_url,
            "rule.rollback",
            lambda: _ok(api.post(f"{BASE}/rules/hot bearing/rollback", json={"version": 1}, headers=h)),
        )
        assert api.get(f"{BASE}/rules/hot bearing", headers=h).json()["version"] == 3
        missing = api.post(f"{BASE}/rules/hot bearing/rollback", json={"version": 9}, headers=h)
        assert missing.status_code == 404
    assert (back["actor"], back["before"]["version"], back["after"]["version"]) == ("rita", 2, 3)
    assert back["before"]["definition"]["condition"]["levels"][0]["threshold"] == 90
    assert back["after"]["definition"] == first["after"]["definition"]


def test_silences_created_and_ended_are_each_one_entry(db_url: str) -> None:
    """Creating a silence records its window; ending it records the end moving from later to now."""
    fleet = seed(db_url)
    h = auth(token(db_url, "dispatcher", "dora"))
    with api_client(db_url) as api:
        body = {"device": str(fleet.devices["pump-1"]), "duration_s": 3600, "reason": "pump swap"}
        created = _one_new(
            db_url, "silence.create", lambda: _ok(api.post(f"{BASE}/silences", json=body, headers=h), 201)
        )
        sid = int(created["object_id"])
        assert created["before"] is None and created["after"]["reason"] == "pump swap"
        ended = _one_new(db_url, "silence.end", lambda: _ok(api.post(f"{BASE}/silences/{sid}/end", headers=h)))
    assert ended["actor"] == "dora" and ended["before"]["ends_at"] > ended["after"]["ends_at"]


def test_tokens_and_technicians_are_audited(db_url: str) -> None:
    """Creating and revoking a token, adding a technician and replacing their skills: one entry each."""
    fleet = seed(db_url)
    admin = auth(token(db_url, "admin", "root"))
    with api_client(db_url) as api:
        body = {"name": "Cleo", "email": "cleo@example.com", "home_lat": 48.2, "home_lon": 11.6}
        tech = _one_new(
            db_url, "technician.create", lambda: _ok(api.post(f"{BASE}/technicians", json=body, headers=admin), 201)
        )
        cleo = int(tech["object_id"])
        assert tech["after"]["email"] == "cleo@example.com" and tech["before"] is None
        skills = {"skills": {"pump_mech": 2}}
        matrix = _one_new(
            db_url,
            "technician.skills",
            lambda: _ok(api.put(f"{BASE}/technicians/{cleo}/skills", json=skills, headers=admin)),
        )
        assert matrix["before"] == {"skills": {}, "models": []}
        assert matrix["after"] == {"skills": {"pump_mech": 2}, "models": []}
        new = {"name": "cleo-phone", "role": "technician", "technician_id": cleo}
        created = _one_new(
            db_url, "token.create", lambda: _ok(api.post(f"{BASE}/tokens", json=new, headers=admin), 201)
        )
        assert created["actor"] == "root" and created["after"]["technician_id"] == cleo
        assert created["after"]["prefix"].startswith("fw_") and "token_hash" not in created["after"]
        revoked = _one_new(
            db_url, "token.revoke", lambda: _ok(api.delete(f"{BASE}/tokens/{created['object_id']}", headers=admin), 204)
        )
        assert revoked["before"]["revoked_at"] is None and revoked["after"]["revoked_at"] is not None
    assert fleet.technicians  # the seeded roster was written with SQL, so it has no entries
    assert len(_rows(db_url, "technician.create")) == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ],
)
def test_the_log_refuses_updates_and_deletes(db_url: str, statement: str) -> None:
    """Entries can only be appended: UPDATE, DELETE and TRUNCATE are refused by the database itself."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        audit.record(
            conn, "dora", "ticket.status", "ticket", 1, before={"status": "new"}, after={"status": "cancelled"}
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit_log is append-only"):
            conn.execute(statement)
        assert conn.execute("SELECT actor FROM audit_log").fetchall() == [("dora",)]


def test_the_log_is_read_through_the_api_with_filters_and_pages(db_url: str) -> None:
    """GET /audit pages newest first and filters by object, actor and action; only admins and dispatchers read it."""
    h = auth(token(db_url, "dispatcher"))  # its creation is the first entry (actor: system)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(3):
            audit.record(
                conn, "dora", "ticket.status", "ticket", i, before={"status": "new"}, after={"status": "assigned"}
            )
        audit.record(conn, "rita", "rule.apply", "rule", 1, before=None, after={"version": 1})
    with api_client(db_url) as api:
        page = api.get(f"{BASE}/audit", params={"limit": 2}, headers=h).json()
        assert page["total"] == 5 and [e["actor"] for e in page["items"]] == ["rita", "dora"]
        last = api.get(f"{BASE}/audit", params={"limit": 2, "offset": 4}, headers=h).json()["items"]
        assert [(e["action"], e["actor"]) for e in last] == [("token.create", "system")]
        by_object = api.get(f"{BASE}/audit", params={"object_type": "ticket", "object_id": "1"}, headers=h).json()
        assert [(e["object_id"], e["before"], e["after"]) for e in by_object["items"]] == [
            ("1", {"status": "new"}, {"status": "assigned"})
        ]
        assert api.get(f"{BASE}/audit", params={"actor": "rita"}, headers=h).json()["total"] == 1
        assert api.get(f"{BASE}/audit", params={"action": "ticket.status"}, headers=h).json()["total"] == 3
        for role in ("reliability_engineer", "field_engineer", "viewer"):
            assert api.get(f"{BASE}/audit", headers=auth(token(db_url, role))).status_code == 403, role
        assert api.get(f"{BASE}/audit", headers=auth(token(db_url, "admin"))).status_code == 200
